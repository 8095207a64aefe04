//! Rebuild when a file is added to or removed from `static/`: the files are
//! compiled into `maelab` (`src/http/static_files.rs`), and the embedding
//! macro only notices edits to the files it already knows.

fn main() {
    println!("cargo::rerun-if-changed=../static");
}
