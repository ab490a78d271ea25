//! The service end to end: a real server on a loopback port, a real SQLite file and the real
//! PostgreSQL (127.0.0.1:5432, database `test`; each run gets its own fresh database), a real
//! (small, trained once and cached) DVSP model, real MNIST digits as PNG.
mod common;

use std::time::Instant;

use common::*;
use dvsp_custody::store::Store;
use dvsp_server::auth;
use reqwest::{multipart, Client, StatusCode};
use serde_json::{json, Value};

/// Every flow of the API against one store.
async fn flows(db: &str) {
    let k = keys(db).await;
    let c = Client::new();
    let s = Server::start(db, &["--max-attempts", "6"]).await;

    // Authentication and roles.
    for (request, status) in [
        (
            c.post(s.url("/v1/subjects")).json(&json!({"id": "three"})),
            401,
        ),
        (
            c.post(s.url("/v1/subjects"))
                .bearer_auth("dvsp_000000000000_nope")
                .json(&json!({"id": "three"})),
            401,
        ),
        (
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.verify)
                .json(&json!({"id": "three"})),
            403,
        ),
    ] {
        assert_error(&send(request).await, status);
    }
    let r = send(
        c.post(s.url("/v1/subjects"))
            .header("x-api-key", &k.enroll)
            .json(&json!({"id": "three", "name": "Three"})),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    assert_error(
        &send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({"id": "three"})),
        )
        .await,
        409,
    );
    assert_eq!(
        send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({"id": "seven"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );

    // Enroll two '3's (multipart and base64 JSON) and one '7' (raw body).
    let threes = digits(3, 5);
    let sevens = digits(7, 3);
    let form = multipart::Form::new().part(
        "image",
        multipart::Part::bytes(threes[0].clone()).file_name("a.png"),
    );
    let r = send(
        c.post(s.url("/v1/subjects/three/templates"))
            .bearer_auth(&k.enroll)
            .multipart(form),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    assert!(r.1["quality"].as_f64().unwrap() > 0.0 && r.1["template_id"].is_string());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&threes[1]);
    let r = send(
        c.post(s.url("/v1/subjects/three/templates"))
            .bearer_auth(&k.enroll)
            .json(&json!({"image_base64": b64})),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    assert_eq!(
        send(png_body(
            &c,
            &s.url("/v1/subjects/seven/templates"),
            &k.enroll,
            &sevens[0]
        ))
        .await
        .0,
        StatusCode::CREATED
    );

    // Verify: another '3' matches, a '7' does not.
    let r = send(png_body(
        &c,
        &s.url("/v1/subjects/three/verify"),
        &k.verify,
        &threes[2],
    ))
    .await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    assert_eq!(r.1["match"], json!(true), "{:?}", r.1);
    assert!(r.1["distance"].as_f64().unwrap() <= r.1["threshold"].as_f64().unwrap());
    assert_eq!(r.1["templates_compared"], json!(2));
    let r = send(png_body(
        &c,
        &s.url("/v1/subjects/three/verify"),
        &k.verify,
        &sevens[1],
    ))
    .await;
    assert_eq!(r.1["match"], json!(false), "{:?}", r.1);
    // Two images, nothing stored.
    let form = multipart::Form::new()
        .part("image_a", multipart::Part::bytes(threes[3].clone()))
        .part("image_b", multipart::Part::bytes(threes[4].clone()));
    let r = send(
        c.post(s.url("/v1/verify"))
            .bearer_auth(&k.verify)
            .multipart(form),
    )
    .await;
    assert_eq!(r.1["match"], json!(true), "{:?}", r.1);

    // Identify ranks the right subject first.
    let r = send(png_body(
        &c,
        &s.url("/v1/identify?top_k=2"),
        &k.verify,
        &threes[3],
    ))
    .await;
    assert_eq!(
        r.1["candidates"][0]["subject_id"],
        json!("three"),
        "{:?}",
        r.1
    );
    assert_eq!(r.1["candidates"].as_array().unwrap().len(), 2);
    let r = send(png_body(&c, &s.url("/v1/identify"), &k.verify, &sevens[2])).await;
    assert_eq!(
        r.1["candidates"][0]["subject_id"],
        json!("seven"),
        "{:?}",
        r.1
    );

    // Bad input: 4xx JSON errors, never 500.
    assert_error(
        &send(png_body(
            &c,
            &s.url("/v1/subjects/three/templates"),
            &k.enroll,
            b"these are not image bytes",
        ))
        .await,
        422,
    );
    let truncated = &threes[0][..threes[0].len() / 2];
    assert_error(
        &send(png_body(
            &c,
            &s.url("/v1/subjects/three/templates"),
            &k.enroll,
            truncated,
        ))
        .await,
        422,
    );
    let bomb = png_header(50_000, 50_000);
    let t = Instant::now();
    let r = send(png_body(
        &c,
        &s.url("/v1/subjects/three/templates"),
        &k.enroll,
        &bomb,
    ))
    .await;
    assert_error(&r, 422);
    assert!(
        r.1["message"].as_str().unwrap().contains("50000x50000"),
        "{:?}",
        r.1
    );
    assert!(
        t.elapsed().as_millis() < 2000,
        "the bomb took {:?}",
        t.elapsed()
    );
    for (request, status) in [
        (
            png_body(
                &c,
                &s.url("/v1/subjects/three/templates"),
                &k.enroll,
                &vec![0u8; 300_000],
            ),
            413,
        ),
        (
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .header("content-type", "application/json")
                .body("{\"id\": "),
            400,
        ),
        (
            c.post(s.url("/v1/identify"))
                .bearer_auth(&k.verify)
                .header("content-type", "application/json")
                .body("[1,"),
            400,
        ),
        (
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({"id": "bad id!"})),
            422,
        ),
        (
            c.post(s.url("/v1/identify"))
                .bearer_auth(&k.verify)
                .body("x"),
            415,
        ),
        (
            png_body(
                &c,
                &s.url("/v1/subjects/nobody/verify"),
                &k.verify,
                &threes[2],
            ),
            404,
        ),
        (
            c.get(s.url("/v1/subjects/nobody")).bearer_auth(&k.verify),
            404,
        ),
        (c.get(s.url("/v1/no/such/route")), 404),
    ] {
        assert_error(&send(request).await, status);
    }

    // Brute-force guard, per (key, subject): a fresh key's attempts 1..=6 pass, the 7th is
    // refused; the key that verified (and identified) "three" above is not locked out by it.
    let fresh = key_with(
        db,
        &[auth::Role::Verify],
        Some("default"),
        auth::ScorePolicy::Full,
    )
    .await;
    for _ in 0..6 {
        assert_eq!(
            send(png_body(
                &c,
                &s.url("/v1/subjects/three/verify"),
                &fresh,
                &threes[2]
            ))
            .await
            .0,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(png_body(
            &c,
            &s.url("/v1/subjects/three/verify"),
            &k.verify,
            &threes[2]
        ))
        .await
        .0,
        StatusCode::OK
    );
    let res = png_body(&c, &s.url("/v1/subjects/three/verify"), &fresh, &threes[2])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));

    // Templates of another model are refused with 409.
    let store = Store::connect(db).await.unwrap();
    store
        .create_subject("default", "legacy", None)
        .await
        .unwrap();
    let row = dvsp_custody::store::SealedRow::new(
        &keyring(),
        "legacy-t".into(),
        "default".into(),
        "legacy".into(),
        "0000000000000000".into(),
        0,
        &[1.0; 32],
    );
    store.add_template(&row, None, None).await.unwrap();
    let r = send(png_body(
        &c,
        &s.url("/v1/subjects/legacy/verify"),
        &k.verify,
        &threes[2],
    ))
    .await;
    assert_error(&r, 409);
    let m = r.1["message"].as_str().unwrap();
    assert!(
        m.contains("dvsp reembed") && m.contains("enroll it again"),
        "{m}"
    );

    // Delete: admin only; then 404.
    assert_error(
        &send(c.delete(s.url("/v1/subjects/seven")).bearer_auth(&k.enroll)).await,
        403,
    );
    assert_eq!(
        send(c.delete(s.url("/v1/subjects/seven")).bearer_auth(&k.admin))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    for (request, status) in [
        (
            c.get(s.url("/v1/subjects/seven")).bearer_auth(&k.verify),
            404,
        ),
        (
            c.delete(s.url("/v1/subjects/seven")).bearer_auth(&k.admin),
            404,
        ),
    ] {
        assert_error(&send(request).await, status);
    }

    // Restart: the templates are still there and still match.
    s.stop().await;
    let s = Server::start(db, &[]).await;
    let r = send(c.get(s.url("/v1/subjects/three")).bearer_auth(&k.verify)).await;
    assert_eq!(r.1["templates"].as_array().unwrap().len(), 2, "{:?}", r.1);
    let r = send(png_body(&c, &s.url("/v1/identify"), &k.verify, &threes[4])).await;
    assert_eq!(
        r.1["candidates"][0]["subject_id"],
        json!("three"),
        "{:?}",
        r.1
    );

    // 200 concurrent enrolls: all stored, each exactly once.
    assert_eq!(
        send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({"id": "crowd"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    let pngs = digits(1, 20);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let req = png_body(
                &c,
                &s.url("/v1/subjects/crowd/templates"),
                &k.enroll,
                &pngs[i % 20],
            );
            tokio::spawn(send(req))
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
        assert!(ids.insert(r.1["template_id"].as_str().unwrap().to_string()));
    }
    let r = send(c.get(s.url("/v1/subjects/crowd")).bearer_auth(&k.verify)).await;
    let stored: std::collections::BTreeSet<String> = r.1["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, ids);

    // Pagination walks every subject once.
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let q = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let r = send(
            c.get(s.url(&format!("/v1/subjects?limit=2{q}")))
                .bearer_auth(&k.verify),
        )
        .await;
        seen.extend(
            r.1["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string()),
        );
        match r.1["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["crowd", "legacy", "three"]);

    grpc_flows(&s, &k, &c).await;
    dashboard_queries_name_exported_metrics(&s, &c).await;
    s.stop().await;
}

/// Every metric the Grafana dashboard (deploy/grafana/dashboards/dvsp.json) queries is in the
/// server's /metrics, after the flows above used every route, decision, auth failure and
/// gRPC call.
async fn dashboard_queries_name_exported_metrics(s: &Server, c: &Client) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/dvsp.json"
    );
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("dvsp_") {
                let boundary = expr[..i]
                    .chars()
                    .last()
                    .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
                if boundary {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    queried.insert(name);
                }
            }
        }
    }
    assert!(queried.len() >= 10, "{queried:?}");
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !exported.contains(q.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the server does not export: {missing:?}"
    );
}

/// `msg` with an API key in the metadata (`x-api-key`, or `authorization: Bearer`).
fn authed<T>(msg: T, key: &str, bearer: bool) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if bearer {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse().unwrap());
    } else {
        r.metadata_mut().insert("x-api-key", key.parse().unwrap());
    }
    r
}

/// The gRPC API against the same server, store and keys as the REST flows above.
async fn grpc_flows(s: &Server, k: &Keys, c: &Client) {
    use dvsp_server::grpc::proto;
    use tonic::Code;
    let mut g = proto::verification_client::VerificationClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let new = |id: &str| proto::CreateSubjectRequest {
        id: id.into(),
        name: Some("Four".into()),
    };

    // Authentication, roles, conflicts.
    let e = g.create_subject(new("four")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = g
        .create_subject(authed(new("four"), "dvsp_000000000000_nope", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = g
        .create_subject(authed(new("four"), &k.verify, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let made = g
        .create_subject(authed(new("four"), &k.enroll, true))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (made.id.as_str(), made.name.as_deref()),
        ("four", Some("Four"))
    );
    let e = g
        .create_subject(authed(new("four"), &k.enroll, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = g
        .create_subject(authed(new("bad id!"), &k.enroll, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Enroll two '4's; junk bytes are INVALID_ARGUMENT.
    let fours = digits(4, 5);
    let nines = digits(9, 1);
    for png in &fours[..2] {
        let t = g
            .enroll(authed(
                proto::EnrollRequest {
                    subject_id: "four".into(),
                    image: png.clone().into(),
                },
                &k.enroll,
                false,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(t.quality.unwrap() > 0.0 && !t.id.is_empty());
    }
    let e = g
        .enroll(authed(
            proto::EnrollRequest {
                subject_id: "four".into(),
                image: b"these are not image bytes".to_vec().into(),
            },
            &k.enroll,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("not an image"), "{e:?}");
    let e = g
        .enroll(authed(
            proto::EnrollRequest {
                subject_id: "nobody".into(),
                image: fours[0].clone().into(),
            },
            &k.enroll,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Verify: a third '4' matches, a '9' does not.
    let verify = |png: &Vec<u8>| {
        authed(
            proto::VerifyRequest {
                subject_id: "four".into(),
                image: png.clone().into(),
            },
            &k.verify,
            false,
        )
    };
    let d = g.verify(verify(&fours[2])).await.unwrap().into_inner();
    assert_eq!(d.templates_compared, 2);
    let d = d.decision.unwrap();
    assert!(d.r#match && d.distance.unwrap() <= d.threshold, "{d:?}");
    let d = g.verify(verify(&nines[0])).await.unwrap().into_inner();
    assert!(!d.decision.unwrap().r#match);
    let e = g
        .verify(authed(
            proto::VerifyRequest {
                subject_id: "legacy".into(),
                image: fours[2].clone().into(),
            },
            &k.verify,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Identify ranks the right subject first.
    let id = g
        .identify(authed(
            proto::IdentifyRequest {
                image: fours[3].clone().into(),
                top_k: 2,
            },
            &k.verify,
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(id.candidates.len(), 2);
    assert_eq!(id.candidates[0].subject_id, "four", "{id:?}");

    // REST and gRPC give the same similarity for the same two images.
    let pair = g
        .verify_pair(authed(
            proto::VerifyPairRequest {
                image_a: fours[3].clone().into(),
                image_b: fours[4].clone().into(),
            },
            &k.verify,
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let form = multipart::Form::new()
        .part("image_a", multipart::Part::bytes(fours[3].clone()))
        .part("image_b", multipart::Part::bytes(fours[4].clone()));
    let rest = send(
        c.post(s.url("/v1/verify"))
            .bearer_auth(&k.verify)
            .multipart(form),
    )
    .await;
    let rest_sim = rest.1["similarity"].as_f64().unwrap();
    let grpc_sim = pair.similarity.unwrap();
    assert!(
        (grpc_sim - rest_sim).abs() < 1e-5,
        "gRPC {grpc_sim} vs REST {rest_sim}"
    );
    let model = g
        .get_model(authed(proto::GetModelRequest {}, &k.verify, false))
        .await
        .unwrap()
        .into_inner();
    let rest_model = send(c.get(s.url("/v1/model")).bearer_auth(&k.verify)).await;
    assert_eq!(json!(model.model_id), rest_model.1["card"]["model_id"]);
    assert_eq!(json!(model.threshold), rest_model.1["threshold"]);

    // Delete: admin only, then NOT_FOUND; the REST API sees the same store.
    let del = |key: &str| {
        authed(
            proto::DeleteSubjectRequest { id: "four".into() },
            key,
            false,
        )
    };
    let e = g.delete_subject(del(&k.enroll)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let r = send(c.get(s.url("/v1/subjects/four")).bearer_auth(&k.verify)).await;
    assert_eq!(r.1["templates"].as_array().unwrap().len(), 2, "{:?}", r.1);
    g.delete_subject(del(&k.admin)).await.unwrap();
    let e = g
        .get_subject(authed(
            proto::GetSubjectRequest { id: "four".into() },
            &k.verify,
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_error(
        &send(c.get(s.url("/v1/subjects/four")).bearer_auth(&k.verify)).await,
        404,
    );
    let page = g
        .list_subjects(authed(
            proto::ListSubjectsRequest {
                limit: 10,
                after: String::new(),
                prefix: String::new(),
            },
            &k.verify,
            false,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = page.subjects.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["crowd", "legacy", "three"]);

    // Health checking, and the calls in /metrics.
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "dvsp.v1.Verification".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // Reflection lists the service (what `grpcurl list` asks).
    use tonic_reflection::pb::v1 as reflection;
    let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut refl = reflection::server_reflection_client::ServerReflectionClient::new(channel);
    let req = reflection::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            reflection::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut replies = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(reflection::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        reply.message_response
    else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"dvsp.v1.Verification"), "{names:?}");
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        r#"dvsp_grpc_requests_total{code="Ok",method="Verify"} 2"#,
        r#"dvsp_grpc_requests_total{code="Unauthenticated",method="CreateSubject"} 2"#,
        r#"dvsp_grpc_requests_total{code="InvalidArgument",method="Enroll"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing from /metrics");
    }
}

/// A small PNG whose header claims `w` x `h` grey pixels (a decompression bomb's shape: a
/// few hundred bytes that would decode to `w * h` bytes).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    use std::io::Write;
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(&body);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&vec![0u8; 1 << 16]).unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z.finish().unwrap());
    chunk(&mut out, b"IEND", &[]);
    out
}

on_both_stores!(flows);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_real_routes_and_metrics_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("o.db").display());
    let s = Server::start(&db, &[]).await;
    let c = Client::new();
    let (status, doc) = send(c.get(s.url("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 11);
    for (path, item) in paths {
        for (method, _) in item
            .as_object()
            .unwrap()
            .iter()
            .filter(|(m, _)| *m != "parameters")
        {
            let url = s.url(&path.replace("{id}", "x").replace("{template_id}", "y"));
            let req = c.request(method.to_uppercase().parse().unwrap(), url);
            let (st, body) = send(req).await;
            assert_ne!(st, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            let unrouted = body["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no such route"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
        }
    }
    assert_eq!(send(c.get(s.url("/healthz"))).await.0, StatusCode::OK);
    assert_eq!(send(c.get(s.url("/readyz"))).await.0, StatusCode::OK);
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "dvsp_http_requests_total",
        "dvsp_http_request_duration_seconds",
        "dvsp_auth_failures_total",
        "dvsp_templates_stored",
        "dvsp_inference_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_gets_a_json_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &["--timeout-secs", "1"]).await;
    // Headers promise 100 body bytes; 3 arrive, then nothing: the server gives up after 1 s.
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/identify HTTP/1.1\r\nHost: {addr}\r\nx-api-key: {}\r\ncontent-type: image/png\r\ncontent-length: 100\r\n\r\nabc",
        k.verify
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains(r#""error":"timeout""#) && text.contains("longer than 1 s"),
        "{text}"
    );
    drop(tcp);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_batch_fails_its_jobs_and_the_worker_goes_on() {
    use dvsp_server::{error::ApiError, metrics::Metrics, worker::Worker};
    let model = dvsp_core::artifact::load(&model(), tch::Device::Cpu).unwrap();
    let w = Worker::start(
        model,
        1,
        std::time::Duration::from_millis(1),
        4,
        std::sync::Arc::new(Metrics::new()),
    );
    // The model takes 1x28x28; three channels make its first conv panic inside libtorch.
    let bad = tch::Tensor::zeros([3, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
    let e = w.embed(vec![bad]).await.unwrap_err();
    assert!(matches!(e, ApiError::Internal(_)), "{e:?}");
    let good = tch::Tensor::zeros([1, 28, 28], (tch::Kind::Float, tch::Device::Cpu));
    let out = w.embed(vec![good]).await.unwrap();
    assert_eq!(out.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_api_key_has_a_probe_budget() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &["--max-key-probes", "2"]).await;
    let c = Client::new();
    let three = digits(3, 1).remove(0);
    let identify = |key: &str| png_body(&c, &s.url("/v1/identify"), key, &three);
    for _ in 0..2 {
        assert_eq!(send(identify(&k.verify)).await.0, StatusCode::OK);
    }
    // The third probe by the same key, whatever the route, is refused; another key is not.
    let form = multipart::Form::new()
        .part("image_a", multipart::Part::bytes(three.clone()))
        .part("image_b", multipart::Part::bytes(three.clone()));
    let r = send(
        c.post(s.url("/v1/verify"))
            .bearer_auth(&k.verify)
            .multipart(form),
    )
    .await;
    assert_error(&r, 429);
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("probes by API key"),
        "{:?}",
        r.1
    );
    let res = identify(&k.verify).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(send(identify(&k.admin)).await.0, StatusCode::OK);
    s.stop().await;
}

/// `request` on a fresh TCP connection; the whole answer (send `connection: close`).
async fn raw(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut out),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// NUL and other control characters, over-long names, `.`/`..` ids and invalid UTF-8 in a
/// path: JSON 422 (gRPC INVALID_ARGUMENT) from the store in `db`, never a 5xx.
async fn hostile_strings(db: &str) {
    use dvsp_server::grpc::proto;
    use tonic::Code;
    let k = keys(db).await;
    let s = Server::start(db, &[]).await;
    let c = Client::new();
    let create = |body: Value| {
        send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.admin)
                .json(&body),
        )
    };
    for body in [
        json!({"id": "x1", "name": "a\u{0000}b"}),
        json!({"id": "x1", "name": "\u{202e}\u{0000}"}),
        json!({"id": "x1", "name": "\u{202e}evil"}),
        json!({"id": "x1", "name": "line\nbreak"}),
        json!({"id": "x1", "name": "\u{001b}[31m"}),
        json!({"id": "x1", "name": "é".repeat(257)}),
        json!({"id": "x\u{0000}1"}),
        json!({"id": "."}),
        json!({"id": ".."}),
    ] {
        let r = create(body.clone()).await;
        assert_error(&r, 422);
    }
    // 256 characters (512 bytes) is a name; a right-to-left script without overrides too.
    let r = create(json!({"id": "x1", "name": "é".repeat(256)})).await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    let r = create(json!({"id": "x2", "name": "עברית"})).await;
    assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
    for q in ["after=%00", "after=a%00b", "after=%E2%80%AE", "after=.."] {
        let r = send(
            c.get(s.url(&format!("/v1/subjects?{q}")))
                .bearer_auth(&k.verify),
        )
        .await;
        assert_error(&r, 422);
    }
    // Dot segments and invalid UTF-8 sent verbatim (an HTTP client would normalise them).
    for path in [
        "/v1/subjects/..",
        "/v1/subjects/%2e",
        "/v1/subjects/%FF",
        "/v1/subjects/%00",
        "/v1/subjects/x1/templates/%C3%28",
    ] {
        let method = if path.contains("templates") {
            "DELETE"
        } else {
            "GET"
        };
        let res = raw(
            &s.base,
            &format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
                k.admin
            ),
        )
        .await;
        assert!(res.starts_with("HTTP/1.1 422"), "{path}: {res}");
        assert!(
            res.contains("application/json") && res.contains(r#""error":"unprocessable""#),
            "{path}: {res}"
        );
    }

    let mut g = proto::verification_client::VerificationClient::connect(s.grpc.clone())
        .await
        .unwrap();
    for (id, name) in [
        ("g1", "a\u{0000}b"),
        ("g1", "\u{202e}\u{0000}"),
        ("..", "ok"),
    ] {
        let req = proto::CreateSubjectRequest {
            id: id.into(),
            name: Some(name.into()),
        };
        let e = g
            .create_subject(authed(req, &k.admin, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id:?} {name:?}: {e:?}");
    }
    let req = proto::ListSubjectsRequest {
        limit: 10,
        after: "\u{0000}".into(),
        prefix: String::new(),
    };
    let e = g
        .list_subjects(authed(req, &k.verify, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let req = proto::GetSubjectRequest {
        id: "a\u{0000}".into(),
    };
    let e = g
        .get_subject(authed(req, &k.verify, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Nothing above reached the store as a server error.
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains(r#"status="5"#), "{text}");
    assert!(!text.contains(r#"code="Internal""#), "{text}");
    s.stop().await;
}

on_both_stores!(hostile_strings);

/// A gRPC call sent as raw HTTP/2 (`body` is the whole request body, framing included):
/// the grpc-status it ends with (in the headers of a trailers-only answer, else the trailers).
async fn grpc_raw(s: &Server, method: &str, key: Option<&str>, body: Vec<u8>) -> i32 {
    let addr = s.grpc.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = axum::http::Request::post(format!("{}/dvsp.v1.Verification/{method}", s.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let (res, mut send) = client.send_request(req.body(()).unwrap(), false).unwrap();
    // The server may answer (and reset the stream) before the body: the key comes first.
    let _ = send.send_data(body.into(), true);
    let (parts, mut recv) = res.await.unwrap().into_parts();
    assert_eq!(parts.status, StatusCode::OK);
    let status = match parts.headers.get("grpc-status") {
        Some(v) => v.clone(),
        None => {
            while let Some(chunk) = recv.data().await {
                let n = chunk.unwrap().len();
                let _ = recv.flow_control().release_capacity(n);
            }
            recv.trailers().await.unwrap().unwrap()["grpc-status"].clone()
        }
    };
    status.to_str().unwrap().parse().unwrap()
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_bodies_are_invalid_argument_and_the_key_comes_first() {
    use rand::{Rng, SeedableRng};
    const INVALID_ARGUMENT: i32 = 3;
    const UNAUTHENTICATED: i32 = 16;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("g.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &[]).await;
    // A length-delimited field claiming far more bytes than follow; invalid UTF-8 in a string.
    let garbage = framed(&[0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    let bad_utf8 = framed(&[0x0a, 0x02, 0xc3, 0x28]);
    assert_eq!(
        grpc_raw(&s, "CreateSubject", None, garbage.clone()).await,
        UNAUTHENTICATED
    );
    for (what, body) in [
        ("garbage", garbage),
        ("invalid UTF-8", bad_utf8),
        ("truncated frame", vec![0, 0, 0, 0, 100, 1, 2, 3]),
        ("short prefix", vec![0, 0]),
        ("empty", vec![]),
        ("compressed flag", {
            let mut b = framed(&[0x0a, 0x01, 0x61]);
            b[0] = 1;
            b
        }),
        ("two messages", [framed(&[]), framed(&[])].concat()),
    ] {
        for method in ["CreateSubject", "ListSubjects", "Verify"] {
            let code = grpc_raw(&s, method, Some(&k.admin), body.clone()).await;
            assert_eq!(code, INVALID_ARGUMENT, "{what} to {method}");
        }
    }
    // Random bytes, framed and not: client errors or success, never INTERNAL.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for i in 0..200 {
        let n = rng.random_range(0..64);
        let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let body = if i % 2 == 0 { framed(&bytes) } else { bytes };
        let method = ["CreateSubject", "ListSubjects", "GetSubject", "Identify"][i % 4];
        let code = grpc_raw(&s, method, Some(&k.admin), body.clone()).await;
        assert!(
            [0, 3, 5, 6].contains(&code),
            "{method} {body:?}: grpc-status {code}"
        );
    }
    s.stop().await;
}

/// Opens `n` connections that send half a request head and then nothing.
async fn half_open(base: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        out.push(tcp);
    }
    out
}

/// Whether the server closed `tcp` (EOF or reset) within `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_and_healthz_answers_while_idle_connections_are_held() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Server::start(
        &db,
        &["--header-timeout-secs", "1", "--max-connections", "64"],
    )
    .await;
    let c = Client::new();
    // A client that never finishes its head is disconnected after the header timeout.
    let start = Instant::now();
    let mut slow = half_open(&s.base, 1).await.remove(0);
    assert!(closed_within(&mut slow, std::time::Duration::from_secs(5)).await);
    let waited = start.elapsed().as_secs_f64();
    assert!((0.9..3.0).contains(&waited), "closed after {waited:.2} s");
    // So is one that connects and sends nothing.
    let mut mute = tokio::net::TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .unwrap();
    assert!(closed_within(&mut mute, std::time::Duration::from_secs(5)).await);

    // Five times the connection limit held half-open: /healthz still answers at once (the
    // oldest idle connections make room).
    let held = half_open(&s.base, 320).await;
    for _ in 0..5 {
        let t = Instant::now();
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            Client::new().get(s.url("/healthz")).send(),
        )
        .await
        .expect("/healthz within 1 s")
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(t.elapsed().as_secs_f64() < 1.0);
    }
    drop(held);
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("dvsp_http_connections "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(open <= 64.0, "{open} connections open");
    s.stop().await;
}

/// Opens a connection with a request in flight: its head is in, its body never comes.
async fn stalled(base: &str, key: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/identify HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: image/png\r\ncontent-length: 100\r\n\r\nabc"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tcp
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limits_work_is_refused_with_a_json_503_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("l.db").display());
    let k = keys(&db).await;

    // One /v1 request in flight at most: another is shed, /healthz is not.
    let s = Server::start(&db, &["--max-in-flight", "1", "--timeout-secs", "20"]).await;
    let first = stalled(&s.base, &k.verify).await;
    let res = raw(
        &s.base,
        &format!(
            "GET /v1/subjects HTTP/1.1\r\nhost: x\r\nx-api-key: {}\r\nconnection: close\r\n\r\n",
            k.verify
        ),
    )
    .await;
    assert!(res.starts_with("HTTP/1.1 503"), "{res}");
    assert!(res.contains("retry-after: 1"), "{res}");
    assert!(res.contains(r#""error":"unavailable""#), "{res}");
    assert!(raw(&s.base, HEALTHZ).await.starts_with("HTTP/1.1 200"));
    drop(first);
    let text = Client::new()
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"dvsp_http_shed_total{reason="in_flight"} 1"#),
        "{text}"
    );
    s.stop().await;

    // Two connections at most, both serving requests: a third is answered 503 and closed.
    let s = Server::start(&db, &["--max-connections", "2", "--timeout-secs", "20"]).await;
    let held = (
        stalled(&s.base, &k.verify).await,
        stalled(&s.base, &k.verify).await,
    );
    let res = raw(&s.base, HEALTHZ).await;
    assert!(res.starts_with("HTTP/1.1 503"), "{res}");
    assert!(
        res.contains("retry-after: 1") && res.contains("too many open connections"),
        "{res}"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(raw(&s.base, HEALTHZ).await.starts_with("HTTP/1.1 200"));
    let text = Client::new()
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"dvsp_http_shed_total{reason="connections"} 1"#),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_methods_are_one_label_and_metrics_live_on_their_own_port() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("m.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &[]).await;
    let c = Client::new();
    for m in ["FOOBAR", "X-EVIL-1", "get", "BREW"] {
        let r = c
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                s.url("/healthz"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    // The API port has no /metrics.
    assert_error(&send(c.get(s.url("/metrics"))).await, 404);
    let text = c
        .get(&s.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let other: f64 = text
        .lines()
        .filter(|l| l.starts_with("dvsp_http_requests_total{") && l.contains(r#"method="OTHER""#))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(other, 4.0, "{text}");
    for m in ["FOOBAR", "X-EVIL-1", "BREW", r#"method="get""#] {
        assert!(!text.contains(m), "{m} became a label");
    }
    // The templates gauge follows enrolls and deletes (no count per scrape).
    let gauge = async || {
        let text = c
            .get(&s.metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("dvsp_templates_stored "))
            .unwrap()
            .to_string()
    };
    assert_eq!(gauge().await, "0");
    send(
        c.post(s.url("/v1/subjects"))
            .bearer_auth(&k.admin)
            .json(&json!({"id": "g"})),
    )
    .await;
    let mut tids = Vec::new();
    for png in digits(3, 3) {
        let r = send(png_body(
            &c,
            &s.url("/v1/subjects/g/templates"),
            &k.admin,
            &png,
        ))
        .await;
        assert_eq!(r.0, StatusCode::CREATED, "{:?}", r.1);
        tids.push(r.1["template_id"].as_str().unwrap().to_string());
    }
    assert_eq!(gauge().await, "3");
    let r = c
        .delete(s.url(&format!("/v1/subjects/g/templates/{}", tids[0])))
        .bearer_auth(&k.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(gauge().await, "2");
    let r = c
        .delete(s.url("/v1/subjects/g"))
        .bearer_auth(&k.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(gauge().await, "0");
    s.stop().await;
}

/// Every connection of the store's pool held: requests needing the store are 503 with
/// Retry-After (gRPC UNAVAILABLE), not 500.
async fn pool_timeouts_are_503(db: &str) {
    use dvsp_server::grpc::proto;
    let k = keys(db).await;
    let s = Server::start(
        db,
        &[
            "--db-max-connections",
            "1",
            "--db-acquire-timeout-ms",
            "200",
        ],
    )
    .await;
    let c = Client::new();
    let held = match &s.state.store {
        Store::Sqlite(p) => Err(p.acquire().await.unwrap()),
        Store::Postgres(p) => Ok(p.acquire().await.unwrap()),
    };
    let res = c
        .get(s.url("/v1/subjects"))
        .bearer_auth(&k.verify)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{body:?}");
    let mut g = proto::verification_client::VerificationClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let e = g
        .get_model(authed(proto::GetModelRequest {}, &k.verify, false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    drop(held);
    let r = send(c.get(s.url("/v1/subjects")).bearer_auth(&k.verify)).await;
    assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    s.stop().await;
}

on_both_stores!(pool_timeouts_are_503);

/// A PNG of `w` x `h` pixels of `color` (zeros: a few KB whatever the size).
fn blank_png(w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
    use image::ImageEncoder;
    let bytes = (color.bits_per_pixel() as usize / 8) * w as usize * h as usize;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new_with_quality(
        &mut out,
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::NoFilter,
    )
    .write_image(&vec![0u8; bytes], w, h, color)
    .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoding_is_bounded_in_bytes_and_real_photos_fit() {
    use image::ExtendedColorType::{Rgb8, Rgba16};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("d.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &[]).await;
    let c = Client::new();
    let identify = |png: &[u8]| send(png_body(&c, &s.url("/v1/identify"), &k.verify, png));
    // 4096x4096 16-bit RGBA: within 24 MP, but 134 MB to decode, over 4 bytes x 24 MP.
    let bomb = blank_png(4096, 4096, Rgba16);
    assert!(bomb.len() < 1_000_000, "{} bytes", bomb.len());
    let t = Instant::now();
    let r = identify(&bomb).await;
    assert_error(&r, 422);
    assert!(
        r.1["message"]
            .as_str()
            .unwrap()
            .contains("needs more than 96000000 bytes"),
        "{:?}",
        r.1
    );
    assert!(t.elapsed().as_secs_f64() < 2.0, "{:?}", t.elapsed());
    // A 24 MP photo (6000x4000 RGB, 72 MB decoded) and 16-bit RGBA within the bound decode.
    for png in [blank_png(6000, 4000, Rgb8), blank_png(3000, 4000, Rgba16)] {
        let r = identify(&png).await;
        assert_eq!(r.0, StatusCode::OK, "{:?}", r.1);
    }
    assert_error(&identify(&png_header(6001, 4000)).await, 422);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_are_limited_and_must_send_the_preface_in_time() {
    use dvsp_server::grpc::proto;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("gc.db").display());
    let k = keys(&db).await;
    let s = Server::start(
        &db,
        &["--header-timeout-secs", "1", "--max-connections", "4"],
    )
    .await;
    let addr = s.grpc.trim_start_matches("http://").to_string();
    let second = std::time::Duration::from_secs(1);
    // Four mute connections take every slot; a fifth is closed at once.
    let mut mute = Vec::new();
    for _ in 0..4 {
        mute.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut fifth, std::time::Duration::from_millis(500)).await);
    // Without a preface within the header timeout, each is closed and its slot freed.
    let start = Instant::now();
    for m in &mut mute {
        assert!(closed_within(m, 3 * second).await);
    }
    assert!(start.elapsed() < 3 * second, "{:?}", start.elapsed());
    let mut g = proto::verification_client::VerificationClient::connect(s.grpc.clone())
        .await
        .unwrap();
    let m = g
        .get_model(authed(proto::GetModelRequest {}, &k.verify, false))
        .await
        .unwrap();
    assert!(!m.get_ref().model_id.is_empty());
    s.stop().await;
}
