//! Reading datasets: the official binary format, ImageFolder trees, .tar.gz
//! archives, the content-hash cache, and the errors for bad input. All data
//! is written by the tests, a few tiny images each.

use std::path::{Path, PathBuf};

use maelab_worker::data::{self, DataError, Split, cifar_bin::CIFAR10_CLASSES};

const PLANE: usize = 32 * 32;

/// The pixel value of record `r`, channel `c`, position `p` in the test files.
fn pixel(r: usize, c: usize, p: usize) -> u8 {
    ((r * 7 + c * 50 + p) % 256) as u8
}

/// Write a batch file of records with the given labels; record numbers start at `first`.
fn write_batch(path: &Path, first: usize, labels: &[u8]) {
    let mut bytes = Vec::new();
    for (k, &label) in labels.iter().enumerate() {
        bytes.push(label);
        for c in 0..3 {
            for p in 0..PLANE {
                bytes.push(pixel(first + k, c, p));
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// A complete binary release: 5 train batches of 2 records, a test batch of 3.
fn write_cifar_bin(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=5 {
        let first = (i - 1) * 2;
        write_batch(
            &dir.join(format!("data_batch_{i}.bin")),
            first,
            &[first as u8, (first + 1) as u8],
        );
    }
    write_batch(&dir.join("test_batch.bin"), 100, &[9, 0, 4]);
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

#[test]
fn cifar_binary_gives_hwc_pixels_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bin");
    write_cifar_bin(&dir);
    let cache = tmp.path().join("cache");

    let train = data::open(dir.to_str().unwrap(), Split::Train, &cache).unwrap();
    assert_eq!(train.len(), 10);
    assert_eq!((train.height, train.width), (32, 32));
    assert_eq!(train.labels, (0..10).collect::<Vec<u8>>());
    assert_eq!(train.classes, CIFAR10_CLASSES.to_vec());
    for r in [0, 3, 9] {
        let img = train.image(r);
        for p in [0, 1, 31, 32, 500, PLANE - 1] {
            for c in 0..3 {
                assert_eq!(img[p * 3 + c], pixel(r, c, p), "record {r} pos {p} ch {c}");
            }
        }
    }

    let test = data::open(dir.to_str().unwrap(), Split::Test, &cache).unwrap();
    assert_eq!(test.labels, vec![9, 0, 4]);
    assert_eq!(test.image(2)[3 * 40 + 1], pixel(102, 1, 40));
}

#[test]
fn cifar_binary_reads_class_names_and_looks_inside_one_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // As the official archive unpacks: one folder inside the one given.
    let dir = tmp.path().join("root").join("cifar-10-batches-bin");
    write_cifar_bin(&dir);
    let names: Vec<String> = (0..10).map(|i| format!("c{i}")).collect();
    std::fs::write(dir.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    let ds = data::open(
        tmp.path().join("root").to_str().unwrap(),
        Split::Test,
        &tmp.path().join("cache"),
    )
    .unwrap();
    assert_eq!(ds.classes, names);
}

#[test]
fn cifar_binary_bad_files_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");

    let truncated = tmp.path().join("truncated");
    write_cifar_bin(&truncated);
    let file = truncated.join("data_batch_2.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    let msg = err_text(data::open(truncated.to_str().unwrap(), Split::Train, &cache).unwrap_err());
    assert!(
        msg.contains("data_batch_2.bin") && msg.contains("truncated"),
        "{msg}"
    );

    let missing = tmp.path().join("missing");
    write_cifar_bin(&missing);
    std::fs::remove_file(missing.join("data_batch_3.bin")).unwrap();
    let msg = err_text(data::open(missing.to_str().unwrap(), Split::Train, &cache).unwrap_err());
    assert!(msg.contains("data_batch_3.bin"), "{msg}");

    let bad_label = tmp.path().join("bad_label");
    write_cifar_bin(&bad_label);
    write_batch(&bad_label.join("test_batch.bin"), 0, &[3, 10]);
    let msg = err_text(data::open(bad_label.to_str().unwrap(), Split::Test, &cache).unwrap_err());
    assert!(
        msg.contains("test_batch.bin") && msg.contains("label 10"),
        "{msg}"
    );
}

/// A distinct 8x8 image per (class, index): PNG keeps it exact.
fn tiny_image(class: usize, k: usize) -> image::RgbImage {
    image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([
            (class * 60 + k * 9) as u8,
            (x * 30) as u8,
            (y as usize * 30 + k) as u8,
        ])
    })
}

/// train/{b_dog,a_cat}/ with 3 PNGs + 1 JPEG each, test/ with 2 PNGs each.
/// Classes are created in reverse order to show that labels come from sorting.
fn write_image_folder(root: &Path) {
    for (class, name) in [(1, "b_dog"), (0, "a_cat")] {
        for (split, n) in [("train", 3), ("test", 2)] {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for k in 0..n {
                tiny_image(class, k)
                    .save(dir.join(format!("{k}.png")))
                    .unwrap();
            }
            if split == "train" {
                tiny_image(class, 7).save(dir.join("z.jpg")).unwrap();
            }
        }
    }
    std::fs::write(root.join("README.txt"), "not an image").unwrap();
}

fn write_tar_gz(tree: &Path, archive: &Path, top: Option<&str>) {
    let file = std::fs::File::create(archive).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for split in ["train", "test"] {
        let name = match top {
            Some(t) => format!("{t}/{split}"),
            None => split.to_string(),
        };
        tar.append_dir_all(name, tree.join(split)).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

#[test]
fn image_folder_loads_with_sorted_class_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let cache = tmp.path().join("cache");

    let train = data::open(root.to_str().unwrap(), Split::Train, &cache).unwrap();
    assert_eq!(train.classes, vec!["a_cat", "b_dog"]);
    assert_eq!(train.len(), 8);
    assert_eq!((train.height, train.width), (8, 8));
    assert_eq!(train.labels, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    // Sorted by class then file name: a_cat/0.png is first, b_dog/1.png is sixth.
    assert_eq!(train.image(0), tiny_image(0, 0).as_raw().as_slice());
    assert_eq!(train.image(5), tiny_image(1, 1).as_raw().as_slice());

    let test = data::open(root.to_str().unwrap(), Split::Test, &cache).unwrap();
    assert_eq!(test.labels, vec![0, 0, 1, 1]);
}

#[test]
fn tar_gz_matches_the_folder_with_or_without_a_top_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let cache = tmp.path().join("cache");
    let from_folder = data::open(root.to_str().unwrap(), Split::Train, &cache).unwrap();

    for (name, top) in [("a.tar.gz", Some("cifar-ish")), ("b.tgz", None)] {
        let archive = tmp.path().join(name);
        write_tar_gz(&root, &archive, top);
        let (ds, info) =
            data::open_with_info(archive.to_str().unwrap(), Split::Train, &cache).unwrap();
        assert_eq!(ds, from_folder, "{name}");
        assert!(!info.from_cache);
        // The key of an archive is the plain sha256 of its bytes.
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(std::fs::read(&archive).unwrap()))
        };
        assert_eq!(info.key, sha);
    }
}

#[test]
fn second_open_comes_from_the_cache_not_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let archive = tmp.path().join("data.tar.gz");
    write_tar_gz(&root, &archive, Some("top"));
    let cache = tmp.path().join("cache");
    let spec = archive.to_str().unwrap();

    let (first, info) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(!info.from_cache);
    assert!(info.cache_file.is_file());

    // Tamper with the last pixel byte in the cache file. If the second open
    // decoded the archive it would return the original byte; it returns the
    // tampered one, so the images came from the cache.
    let mut bytes = std::fs::read(&info.cache_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&info.cache_file, &bytes).unwrap();
    let (second, info2) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(info2.from_cache);
    assert_eq!(info2.cache_file, info.cache_file);
    assert_eq!(second.labels, first.labels);
    assert_eq!(
        *second.images.last().unwrap(),
        *first.images.last().unwrap() ^ 0xff
    );

    // Changing the content changes the key: a new archive is decoded afresh.
    tiny_image(5, 5)
        .save(root.join("train").join("a_cat").join("0.png"))
        .unwrap();
    write_tar_gz(&root, &archive, Some("top"));
    let (third, info3) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(!info3.from_cache);
    assert_ne!(info3.key, info.key);
    assert_eq!(third.image(0), tiny_image(5, 5).as_raw().as_slice());

    // A truncated cache file is ignored and rewritten, not an error.
    let bytes = std::fs::read(&info3.cache_file).unwrap();
    std::fs::write(&info3.cache_file, &bytes[..bytes.len() / 2]).unwrap();
    let (fourth, info4) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(!info4.from_cache);
    assert_eq!(fourth, third);
    assert_eq!(std::fs::read(&info4.cache_file).unwrap(), bytes);
}

#[test]
fn folder_cache_is_keyed_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let cache = tmp.path().join("cache");
    let spec = root.to_str().unwrap();
    let (_, a) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    let (_, b) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(!a.from_cache && b.from_cache);
    // Renaming a file changes the key even though no pixel changed.
    let dir = root.join("train").join("b_dog");
    std::fs::rename(dir.join("0.png"), dir.join("00.png")).unwrap();
    let (_, c) = data::open_with_info(spec, Split::Train, &cache).unwrap();
    assert!(!c.from_cache);
    assert_ne!(c.key, a.key);
}

fn open_err(path: &Path, split: Split) -> String {
    let cache = path.parent().unwrap().join("cache");
    err_text(data::open(path.to_str().unwrap(), split, &cache).unwrap_err())
}

#[test]
fn bad_sources_give_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();

    let missing = tmp.path().join("nowhere");
    let msg = open_err(&missing, Split::Train);
    assert!(msg.contains("nowhere") && msg.contains("no such"), "{msg}");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let msg = open_err(&empty, Split::Train);
    assert!(
        msg.contains("empty") && msg.contains("empty folder"),
        "{msg}"
    );

    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let corrupt: PathBuf = root.join("train").join("b_dog").join("1.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let msg = open_err(&root, Split::Train);
    assert!(
        msg.contains("b_dog/1.png") && msg.contains("cannot decode"),
        "{msg}"
    );
    // The test split does not include the corrupt file.
    assert!(
        data::open(
            root.to_str().unwrap(),
            Split::Test,
            &tmp.path().join("cache")
        )
        .is_ok()
    );

    let no_images = tmp.path().join("noimg");
    std::fs::create_dir_all(no_images.join("train").join("cat")).unwrap();
    let msg = open_err(&no_images, Split::Train);
    assert!(msg.contains("cat") && msg.contains("no .jpg"), "{msg}");

    let other = tmp.path().join("other.zip");
    std::fs::write(&other, b"PK").unwrap();
    let msg = open_err(&other, Split::Train);
    assert!(msg.contains("other.zip"), "{msg}");

    let good = tmp.path().join("good");
    write_image_folder(&good);
    let archive = tmp.path().join("cut.tar.gz");
    write_tar_gz(&good, &archive, None);
    let bytes = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let msg = open_err(&archive, Split::Test);
    assert!(
        msg.contains("cut.tar.gz") && msg.contains("corrupt"),
        "{msg}"
    );

    let wrong_layout = tmp.path().join("flat.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&wrong_layout).unwrap(),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        tar.append_dir_all("images", good.join("train").join("a_cat"))
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let msg = open_err(&wrong_layout, Split::Train);
    assert!(
        msg.contains("flat.tar.gz") && msg.contains("no images under train"),
        "{msg}"
    );
}

#[test]
fn images_of_different_sizes_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    write_image_folder(&root);
    let odd = root.join("train").join("b_dog").join("2.png");
    image::RgbImage::new(9, 8).save(&odd).unwrap();
    let msg = open_err(&root, Split::Train);
    assert!(msg.contains("b_dog/2.png") && msg.contains("9x8"), "{msg}");
}

#[test]
fn subset_is_stratified_and_seeded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    // 5 batches of 20 records, labels cycling over 10 classes: 10 per class.
    for i in 1..=5 {
        let labels: Vec<u8> = (0..20).map(|k| (k % 10) as u8).collect();
        write_batch(&dir.join(format!("data_batch_{i}.bin")), i * 20, &labels);
    }
    write_batch(&dir.join("test_batch.bin"), 0, &[0]);
    let ds = data::open(dir.to_str().unwrap(), Split::Train, &tmp.path().join("c")).unwrap();
    assert_eq!(ds.len(), 100);

    let a = ds.subset(30, 1);
    assert_eq!(a.len(), 30);
    assert_eq!(a.class_counts(), vec![3; 10]);
    assert_eq!(a, ds.subset(30, 1));
    assert_ne!(a.images, ds.subset(30, 2).images);
    // Each chosen image is one of the originals with its own label.
    for i in 0..a.len() {
        let found = (0..ds.len()).find(|&j| ds.image(j) == a.image(i)).unwrap();
        assert_eq!(ds.labels[found], a.labels[i]);
    }
    let odd = ds.subset(15, 3);
    assert_eq!(odd.len(), 15);
    assert!(odd.class_counts().iter().all(|&c| c == 1 || c == 2));
    assert_eq!(ds.subset(1000, 0), ds);
}
