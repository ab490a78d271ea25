//! The IDX reader and MNIST-family loading on good and broken files.
use std::io::Write;

use dvsp_core::data::{idx, load_idx_pair, DataSpec};

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: usize) -> idx::Idx {
    idx::Idx {
        dims: vec![n, 28, 28],
        data: (0..n * 784).map(|i| (i % 251) as u8).collect(),
    }
}

#[test]
fn reads_plain_and_gzipped_idx() {
    let dir = tempfile::tempdir().unwrap();
    let a = images(3);
    write(dir.path(), "a", &idx::encode(&a));
    write(dir.path(), "a.gz", &gz(&idx::encode(&a)));
    assert_eq!(idx::read(&dir.path().join("a")).unwrap(), a);
    assert_eq!(idx::read(&dir.path().join("a.gz")).unwrap(), a);
}

#[test]
fn truncated_and_malformed_idx_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = idx::encode(&images(3));
    write(dir.path(), "short", &bytes[..bytes.len() - 10]);
    let e = idx::read(&dir.path().join("short"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated") && e.contains("short"), "{e}");
    write(dir.path(), "short.gz", &gz(&bytes[..bytes.len() - 10]));
    assert!(idx::read(&dir.path().join("short.gz"))
        .unwrap_err()
        .to_string()
        .contains("truncated"));
    // A gzip stream cut in the middle.
    let z = gz(&bytes);
    write(dir.path(), "cut.gz", &z[..z.len() / 2]);
    assert!(idx::read(&dir.path().join("cut.gz"))
        .unwrap_err()
        .to_string()
        .contains("gzip"));
    assert!(idx::parse(&[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0])
        .unwrap_err()
        .contains("0x0d"));
    assert!(idx::parse(&[1, 2, 3]).unwrap_err().contains("header"));
    assert!(idx::parse(&[0, 0, 8, 2, 0, 0])
        .unwrap_err()
        .contains("truncated header"));
    let mut extra = bytes.clone();
    extra.push(7);
    assert!(idx::parse(&extra).unwrap_err().contains("trailing"));
    assert!(idx::read(&dir.path().join("missing")).is_err());
}

#[test]
fn mislabelled_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "x-images-idx3-ubyte", &idx::encode(&images(4)));
    write(
        dir.path(),
        "x-labels-idx1-ubyte",
        &idx::encode(&idx::Idx {
            dims: vec![3],
            data: vec![1, 2, 3],
        }),
    );
    let e = load_idx_pair(dir.path(), "x").unwrap_err().to_string();
    assert!(e.contains("3 labels for 4 images"), "{e}");
    write(
        dir.path(),
        "x-labels-idx1-ubyte",
        &idx::encode(&idx::Idx {
            dims: vec![4],
            data: vec![1, 2, 12, 3],
        }),
    );
    assert!(load_idx_pair(dir.path(), "x")
        .unwrap_err()
        .to_string()
        .contains("label 12"));
    write(
        dir.path(),
        "x-labels-idx1-ubyte",
        &idx::encode(&idx::Idx {
            dims: vec![4],
            data: vec![1, 2, 9, 3],
        }),
    );
    let d = load_idx_pair(dir.path(), "x").unwrap();
    assert_eq!(d.images.size(), [4, 1, 28, 28]);
    assert_eq!(d.shape(), [1, 28, 28]);
    assert_eq!(Vec::<i64>::try_from(&d.labels).unwrap(), vec![1, 2, 9, 3]);
    assert!(load_idx_pair(dir.path(), "nothing")
        .unwrap_err()
        .to_string()
        .contains("make setup"));
}

#[test]
fn mnist_split_is_the_papers() {
    let split = DataSpec::Mnist
        .load(&dvsp_core::data::default_root(), None)
        .expect("MNIST from `make setup`");
    assert_eq!(split.train.len(), 50_000);
    assert_eq!(split.test.len(), 10_000);
    let (name, t10k) = split.extra_test.as_ref().unwrap();
    assert_eq!((name.as_str(), t10k.len()), ("t10k", 10_000));
    // Every digit is an identity with roughly 1,000 test images.
    let counts = split.test.labels.bincount(None::<tch::Tensor>, 10);
    assert!(Vec::<i64>::try_from(&counts)
        .unwrap()
        .iter()
        .all(|&c| (850..1150).contains(&c)));
    let fashion = DataSpec::FashionMnist
        .load(&dvsp_core::data::default_root(), None)
        .expect("Fashion-MNIST from `make setup`");
    assert_eq!(fashion.train.len(), 50_000);
    assert!("folder:".parse::<DataSpec>().is_err() && "cifar".parse::<DataSpec>().is_err());
}

#[test]
fn image_folder_dataset_holds_out_identities() {
    let dir = tempfile::tempdir().unwrap();
    for (i, id) in ["ann", "bob", "cid", "dan", "eve"].iter().enumerate() {
        std::fs::create_dir(dir.path().join(id)).unwrap();
        for j in 0..2 {
            let img =
                image::RgbImage::from_pixel(40, 30, image::Rgb([i as u8 * 40, j as u8 * 90, 7]));
            img.save(dir.path().join(id).join(format!("{j}.png")))
                .unwrap();
        }
    }
    std::fs::write(dir.path().join("eve").join("notes.txt"), "not an image").unwrap();
    let split = DataSpec::Folder(dir.path().to_path_buf())
        .load(std::path::Path::new("/"), Some((112, 96)))
        .unwrap();
    assert_eq!(split.train.len(), 8);
    assert_eq!(split.test.len(), 2);
    assert_eq!(split.train.shape(), [3, 112, 96]);
    assert_eq!((split.train.classes, split.test.classes), (4, 1));
    std::fs::write(dir.path().join("ann").join("2.png"), b"not a png").unwrap();
    assert!(DataSpec::Folder(dir.path().to_path_buf())
        .load(std::path::Path::new("/"), None)
        .is_err());
}
