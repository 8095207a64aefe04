//! Architecture.md, "Live updates": pages follow the server's event streams;
//! no page script re-reads on a timer. A `setInterval` in any of maelab's own
//! scripts (the vendored chart library aside) fails here, so polling cannot
//! come back unnoticed. One-shot `setTimeout`s (a delay after an event) are
//! allowed.

use std::path::Path;

#[test]
fn no_page_script_polls_on_a_timer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../static");
    let mut scripts = 0;
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("static/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("js") {
            continue;
        }
        scripts += 1;
        let text = std::fs::read_to_string(&path).expect("script");
        for (i, line) in text.lines().enumerate() {
            if line.contains("setInterval") {
                offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        scripts >= 8,
        "found only {scripts} scripts in {}",
        dir.display()
    );
    assert_eq!(offenders, Vec::<String>::new());
}
