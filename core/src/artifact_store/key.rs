//! Object keys: `runs/<run_id>/<random uuid>/<name>`. The uuid makes every
//! upload's key new, so a replaced artifact never overwrites the object a
//! committed row still names, and an upload that never commits cannot clobber
//! one that did.

use uuid::Uuid;

use super::StoreError;

/// A fresh key for artifact `name` of `run_id`. `name` must be a valid
/// artifact name (checked again here: a key must never leave its folder).
pub fn new_key(run_id: Uuid, name: &str) -> Result<String, StoreError> {
    if name.contains('/') {
        return Err(StoreError::BadKey {
            key: name.chars().take(200).collect(),
            reason: "an artifact name is one path segment",
        });
    }
    let key = format!("runs/{run_id}/{}/{name}", Uuid::new_v4().simple());
    check(&key)?;
    Ok(key)
}

/// Refuse a key that could traverse or that the store would rewrite: empty
/// segments (`a//b`, leading or trailing `/`), `.`/`..` or dot-led segments,
/// and any character outside `[A-Za-z0-9._-]` and `/`.
pub fn check(key: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadKey {
            key: key.chars().take(200).collect(),
            reason,
        })
    };
    if key.is_empty() || key.len() > 512 {
        return bad("a key is 1-512 characters");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return bad("empty path segment");
        }
        if segment.starts_with('.') {
            return bad("a segment starts with `.` (`..` would leave the folder)");
        }
        if !segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad("only letters, digits, `.`, `_`, `-` and `/` are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keys_are_unique_and_valid() {
        let run = Uuid::new_v4();
        let a = new_key(run, "checkpoint-e0001.safetensors").expect("key");
        let b = new_key(run, "checkpoint-e0001.safetensors").expect("key");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("runs/{run}/")), "{a}");
        assert!(a.ends_with("/checkpoint-e0001.safetensors"), "{a}");
    }

    #[test]
    fn traversal_and_odd_keys_are_refused() {
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "runs/../../etc/passwd",
            "runs/x/..",
            "/abs",
            "runs//x",
            "runs/x/",
            "runs/x/.hidden",
            "runs\\x",
            "runs/x\0y",
            "runs/é",
            "runs/a b",
        ] {
            assert!(check(bad).is_err(), "{bad:?} accepted");
        }
        assert!(new_key(Uuid::nil(), "../x").is_err());
        assert!(new_key(Uuid::nil(), "a/b").is_err());
        check("runs/00000000-0000-0000-0000-000000000000/abc/log.txt").expect("valid");
    }
}
