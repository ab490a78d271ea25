//! LFW's pairs.txt protocol: the parser's errors carry line numbers, and the 10-fold
//! cross-validation on hand-made scores gives the accuracies worked out by hand.
use dvsp_core::metrics::lfw::{cross_validate, parse_pairs, Image};

fn err(text: &str) -> String {
    parse_pairs(text).unwrap_err().to_string()
}

#[test]
fn pairs_txt_parses_matched_and_mismatched_pairs_by_fold() {
    let text =
        "2 2\nAl 1 2\nAl 2 3\nAl 1 Bo 1\nBo 2 Cy 4\n\nBo 1 2\nCy 1 3\nAl 3 Cy 2\nBo 1 Cy 1\n";
    let p = parse_pairs(text).unwrap();
    assert_eq!(p.len(), 8);
    assert!(p[0].same && p[1].same && !p[2].same && !p[3].same);
    assert_eq!(
        p[3].b,
        Image {
            name: "Cy".into(),
            number: 4
        }
    );
    assert_eq!(
        p.iter().map(|x| x.fold).collect::<Vec<_>>(),
        [0, 0, 0, 0, 1, 1, 1, 1]
    );
    let root = std::path::Path::new("/lfw");
    assert_eq!(p[0].a.path(root), root.join("Al/Al_0001.jpg"));
}

#[test]
fn pairs_txt_rejects_malformed_lines_with_their_number() {
    assert!(err("").contains("line 1"));
    assert!(err("ten 300\n").contains("line 1"), "{}", err("ten 300\n"));
    // A mismatched pair where a matched one belongs (line 2), a five-field line (line 3).
    let e = err("2 1\nAl 1 Bo 1\n");
    assert!(
        e.contains("line 2") && e.contains("matched pair `name n1 n2`"),
        "{e}"
    );
    let e = err("2 1\nAl 1 2\nAl 1 Bo 1 7\n");
    assert!(
        e.contains("line 3") && e.contains("`name1 n1 name2 n2`"),
        "{e}"
    );
    let e = err("2 1\nAl 1 2\nAl 1 Bo x\nBo 1 2\nAl 1 Bo 1\n");
    assert!(e.contains("line 3") && e.contains("\"x\""), "{e}");
    let e = err("2 1\nAl 1 0\n");
    assert!(e.contains("line 2"), "{e}");
    let e = err("2 1\nAl 1 2\nAl 1 Bo 1\nBo 1 2\n");
    assert!(e.contains("ends in fold 2"), "{e}");
    let e = err("2 1\nAl 1 2\nAl 1 Bo 1\nBo 1 2\nAl 1 Bo 1\nBo 3 4\n");
    assert!(e.contains("line 6") && e.contains("unexpected"), "{e}");
}

#[test]
fn ten_fold_accuracy_on_hand_made_scores() {
    // Ten folds of 2 genuine + 2 impostor pairs. Genuine distances 0.1, 0.2; impostor 0.8,
    // 0.9, except fold 0 where one impostor is at 0.15 (a false match at any sensible T).
    let mut s = Vec::new();
    for k in 0..10 {
        s.push((0.1, true, k));
        s.push((0.2, true, k));
        s.push((if k == 0 { 0.15 } else { 0.8 }, false, k));
        s.push((0.9, false, k));
    }
    let r = cross_validate(&s, 10).unwrap();
    // Every fold's threshold separates 0.2 from 0.8 on the other folds: (0.2 + 0.8) / 2.
    // Fold 0 then scores 3/4 (the 0.15 impostor matches); the others 4/4.
    for (k, f) in r.folds.iter().enumerate() {
        assert!((f.threshold - 0.5).abs() < 1e-6, "fold {k}: {f:?}");
        let want = if k == 0 { 0.75 } else { 1.0 };
        assert!((f.accuracy - want).abs() < 1e-12, "fold {k}: {f:?}");
    }
    assert!((r.accuracy_mean - 0.975).abs() < 1e-12);
    // Nine 1.0 and one 0.75: squared deviations 9 * 0.025^2 + 0.225^2 = 0.05625, sample
    // variance 0.05625 / 9 = 0.00625, std 0.0790569, SE sqrt(0.00625 / 10) = 0.025.
    assert!(
        (r.accuracy_std - 0.00625f64.sqrt()).abs() < 1e-12,
        "{}",
        r.accuracy_std
    );
    assert!((r.accuracy_se - 0.025).abs() < 1e-12, "{}", r.accuracy_se);
    assert_eq!(r.pairs, 40);
    // All pairs: 20 genuine (<= 0.2), 1 of 20 impostors at 0.15: EER between 0 and 5%.
    assert!(r.eer <= 0.05, "{}", r.eer);
}
