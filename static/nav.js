// The top bar offers "Sign out" instead of "Sign in" while this browser holds
// a session. The session cookie is HttpOnly; its double-submit companion
// (maelab_csrf, set and cleared with it) is readable, so it tells.
(function () {
  "use strict";
  const signedIn = document.cookie.split("; ").some((c) => c.startsWith("maelab_csrf="));
  const signin = document.getElementById("nav-signin");
  const signout = document.getElementById("nav-signout");
  if (signin && signout) {
    signin.hidden = signedIn;
    signout.hidden = !signedIn;
  }
})();
