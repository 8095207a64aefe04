//! The offline half of `data download`: checksum, unpacking, and the error a
//! failed network request gives.

use std::path::Path;

use maelab_worker::data::download::{download, md5_file, verify_and_unpack};
use maelab_worker::data::{self, DataError, Split};
use md5::Digest;

/// A small archive laid out as the official one: `cifar-10-batches-bin/`
/// with the batch files, the class names and a stray HTML file.
fn write_release(path: &Path) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes)
            .unwrap();
    };
    for (i, name) in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]
    .iter()
    .enumerate()
    {
        let mut record = vec![i as u8];
        record.extend(std::iter::repeat_n(i as u8 * 10, 3072));
        add(name, &record);
    }
    add(
        "batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    );
    add("readme.html", b"<html></html>");
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn a_matching_checksum_unpacks_the_batches_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    write_release(&archive);
    let md5 = hex::encode(md5::Md5::digest(std::fs::read(&archive).unwrap()));
    assert_eq!(md5_file(&archive).unwrap(), md5);

    let dest = tmp.path().join("out");
    let files = verify_and_unpack(&archive, &md5.to_uppercase(), &dest).unwrap();
    assert_eq!(files.len(), 7);
    assert!(dest.join("test_batch.bin").is_file());
    assert!(!dest.join("readme.html").exists());
    assert!(!dest.join("cifar-10-batches-bin").exists());

    let test = data::open(dest.to_str().unwrap(), Split::Test, &tmp.path().join("c")).unwrap();
    assert_eq!(test.labels, vec![5]);
    assert!(test.images.iter().all(|&v| v == 50));
    let train = data::open(dest.to_str().unwrap(), Split::Train, &tmp.path().join("c")).unwrap();
    assert_eq!(train.labels, vec![0, 1, 2, 3, 4]);
}

#[test]
fn a_mismatching_checksum_unpacks_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    write_release(&archive);
    let dest = tmp.path().join("out");
    let err = verify_and_unpack(&archive, data::download::CIFAR10_MD5, &dest).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("cifar-10-binary.tar.gz") && msg.contains(data::download::CIFAR10_MD5),
        "{msg}"
    );
    assert!(!dest.join("test_batch.bin").exists());
}

#[test]
fn an_archive_without_the_batches_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("wrong.tar.gz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&archive).unwrap(),
        flate2::Compression::fast(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_cksum();
    tar.append_data(&mut header, "x/test_batch.bin", &b"abc"[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let md5 = md5_file(&archive).unwrap();
    let msg = verify_and_unpack(&archive, &md5, &tmp.path().join("o"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("wrong.tar.gz") && msg.contains("data_batch_1.bin"),
        "{msg}"
    );
}

#[test]
fn an_unreachable_server_gives_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("x.tar.gz");
    // Port 9 (discard) on localhost: nothing listens, the connection is refused.
    let url = "http://127.0.0.1:9/cifar-10-binary.tar.gz";
    let err = download(url, &target).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }));
    assert!(msg.starts_with(&format!("downloading {url}: ")), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(msg.matches(url).count(), 1, "{msg}");
    assert!(!target.exists());
}
