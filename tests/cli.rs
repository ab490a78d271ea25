//! The `dvsp` binary: bad input gives a one-line error and a non-zero exit, never a panic.
use std::process::Command;

fn dvsp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dvsp"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn one_line_error(args: &[&str], needle: &str) {
    let (code, _, err) = dvsp(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("{args:?}: no error line in {err}"));
    assert!(err.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
}

#[test]
fn bad_input_gives_a_clear_error() {
    one_line_error(
        &["eval", "--model", "/nonexistent/model"],
        "/nonexistent/model/model.json",
    );
    one_line_error(
        &["train", "--data", "cifar", "--out", "/tmp/x"],
        "unknown data set",
    );
    one_line_error(
        &[
            "train",
            "--data",
            "mnist",
            "--data-dir",
            "/nonexistent",
            "--out",
            "/tmp/x",
        ],
        "make setup",
    );
    one_line_error(
        &[
            "train",
            "--batch-size",
            "0",
            "--out",
            "/tmp/x",
            "--limit",
            "10",
        ],
        "batch",
    );
    one_line_error(&["bench", "train", "--threads", "0"], "--threads");
    one_line_error(&["eval"], "--model");
}

#[test]
fn a_model_evaluated_on_the_wrong_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m");
    let (code, _, err) = dvsp(&[
        "train",
        "--method",
        "dvib",
        "--epochs",
        "1",
        "--limit",
        "256",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // A face-style folder: RGB images, not 1x28x28 digits.
    let faces = dir.path().join("faces");
    for id in ["a", "b"] {
        std::fs::create_dir_all(faces.join(id)).unwrap();
        image::RgbImage::new(8, 8)
            .save(faces.join(id).join("1.png"))
            .unwrap();
    }
    let data = format!("folder:{}", faces.display());
    one_line_error(
        &["eval", "--model", model.to_str().unwrap(), "--data", &data],
        "shape",
    );
    std::fs::write(model.join("model.safetensors"), b"junk").unwrap();
    one_line_error(
        &["eval", "--model", model.to_str().unwrap()],
        "does not match the weights",
    );
}

#[test]
fn training_is_deterministic_with_a_seed() {
    // Separate processes: libtorch's generator is global, so in-process tests running in
    // parallel would interleave draws.
    let dir = tempfile::tempdir().unwrap();
    let id = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let args = [
            "train",
            "--method",
            "dvsp",
            "--epochs",
            "1",
            "--limit",
            "512",
            "--batch-size",
            "64",
            "--seed",
            seed,
            "--out",
            out.to_str().unwrap(),
        ];
        let (code, _, err) = dvsp(&args);
        assert_eq!(code, 0, "{err}");
        dvsp_core::artifact::read_card(&out).unwrap().model_id
    };
    let (a, b, c) = (id("a", "7"), id("b", "7"), id("c", "8"));
    assert_eq!(a, b, "same seed, different weights");
    assert_ne!(a, c, "different seeds, same weights");
}

#[test]
fn the_device_flag_is_honoured_and_cuda_without_a_gpu_is_a_clear_error() {
    // This machine has no GPU (and a CPU libtorch): cuda is refused before any work.
    one_line_error(
        &["eval", "--device", "cuda", "--model", "/nonexistent/model"],
        "--device cuda: libtorch sees no CUDA device",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let (code, _, err) = dvsp(&[
        "train",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--limit",
        "256",
        "--batch-size",
        "64",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // The card records the device the model was trained on.
    let card = dvsp_core::artifact::read_card(&out).unwrap();
    assert_eq!(card.training.device, "Cpu");
    one_line_error(&["eval", "--device", "tpu", "--model", "x"], "tpu");
    // Only the commands that run a model take it.
    let (code, _, err) = dvsp(&["keys", "create", "--role", "admin", "--device", "cpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unexpected argument '--device'"), "{err}");
}

#[test]
fn a_missing_store_is_named_and_not_created_by_administration_commands() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.db");
    let db = format!("sqlite://{}", file.display());
    for args in [
        &["keys", "create", "--role", "admin", "--db", &db][..],
        &["galleries", "list", "--db", &db],
        &["models", "list", "--db", &db],
        &["audit-log", "--db", &db],
    ] {
        let (code, out, err) = dvsp(args);
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(err.contains(&format!("store: {db}")), "{args:?}: {err}");
        assert!(
            err.contains("no database at") && err.contains("dvsp db migrate"),
            "{args:?}: {err}"
        );
        assert!(!file.exists(), "{args:?} created {}", file.display());
    }
    // `db migrate` creates it; then the same command works and names it.
    let (code, out, _) = dvsp(&["db", "migrate", "--db", &db]);
    assert_eq!(code, 0);
    assert!(out.contains("migrations applied"), "{out}");
    let (code, out, err) = dvsp(&["keys", "create", "--role", "admin", "--db", &db]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("dvsp_"), "{out}");
    assert!(err.contains(&format!("store: {db}")), "{err}");
}

#[test]
fn an_error_says_its_cause_once_and_logs_carry_no_colour_off_a_terminal() {
    let (code, _, err) = dvsp(&["eval", "--model", "/nonexistent"]);
    assert_ne!(code, 0);
    let line = err.lines().find(|l| l.starts_with("error")).unwrap();
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
    assert!(!err.contains('\u{1b}'), "ANSI escape in {err:?}");
}
