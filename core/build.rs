// `sqlx::migrate!` embeds migrations/ at compile time; without this a new
// migration file does not rebuild the crate and a cached build ships the old
// schema (seen with 0002_run_summary.sql in a cached release build).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
