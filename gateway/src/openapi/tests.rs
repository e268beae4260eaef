use super::*;

/// Every route the router serves under `/v1`, `/healthz` and `/readyz`.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/auth/signup"),
    ("post", "/v1/auth/signin"),
    ("post", "/v1/auth/refresh"),
    ("get", "/v1/devices"),
    ("delete", "/v1/devices/{device_id}"),
    ("get", "/v1/info"),
    ("post", "/v1/users/lookup"),
    ("post", "/v1/conversations"),
    ("get", "/v1/conversations"),
    ("get", "/v1/conversations/{conv_id}"),
    ("post", "/v1/conversations/{conv_id}/members"),
    ("post", "/v1/conversations/{conv_id}/messages"),
    ("get", "/v1/conversations/{conv_id}/messages"),
    ("post", "/v1/conversations/{conv_id}/read"),
    ("post", "/v1/sync"),
    ("get", "/v1/ws"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

#[test]
fn every_route_is_documented_with_its_errors() {
    let doc = serde_json::to_value(document()).expect("serializable");
    for (method, path) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is missing");
        for status in ["400", "429", "503"] {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} lacks {status}"
            );
        }
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let open = ["/v1/auth/", "/v1/info", "/healthz", "/readyz", "/v1/ws"];
        assert_eq!(
            secured,
            !open.iter().any(|p| path.starts_with(p)),
            "{method} {path}"
        );
        assert_eq!(
            op["responses"]["401"].is_object(),
            secured,
            "{method} {path}"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, |m| m.len()))
        .sum();
    assert_eq!(documented, ROUTES.len(), "an undocumented extra operation");
    let codes = &doc["components"]["schemas"]["StableCode"]["enum"];
    assert!(codes
        .as_array()
        .is_some_and(|c| c.len() == bongsu_proto::ErrorCode::ALL.len()));
    assert_eq!(
        doc["paths"]["/v1/conversations/{conv_id}/messages"]["post"]["responses"]["429"]["headers"]
            ["Retry-After"]["schema"]["type"],
        "integer"
    );
}

#[test]
fn the_document_says_lists_are_eventually_consistent() {
    let doc = serde_json::to_value(document()).expect("serializable");
    let list = doc["paths"]["/v1/conversations"]["get"]["description"]
        .as_str()
        .unwrap_or("");
    assert!(list.contains("Eventually consistent"), "{list}");
}

/// The agreement between the document and the gateway: for each request body, every sample
/// the body's schema allows is accepted by the gateway's own conversion and validation (JSON
/// parsing, then `bongsu_proto::model::requests`), and every sample it forbids is refused.
/// Samples are one valid body with one field changed at a time to values around each rule's
/// edges (missing, null, wrong type, lengths, patterns, kinds, bounds).
mod agreement {
    use bongsu_proto::model::requests as req;
    use bongsu_proto::model::{HISTORY_MAX, LOOKUP_MAX, SYNC_MAX};
    use bongsu_proto::ErrorCode;
    use serde_json::{json, Value};

    use super::*;

    const CONV: &str = "0123456789abcdef0123456789abcdef";
    const UUID: &str = "01234567-89ab-cdef-0123-456789abcdef";

    fn validator(doc: &Value, name: &str) -> jsonschema::Validator {
        let root = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": doc["components"],
        });
        jsonschema::draft202012::new(&root).expect("the document's schemas compile")
    }

    /// Ids around the pattern's edges.
    fn ids() -> Vec<Value> {
        vec![
            json!(CONV),
            json!(CONV.to_uppercase()),
            json!(UUID),
            json!(&CONV[1..]),
            json!(format!("{CONV}0")),
            json!(format!("-{}", &CONV[1..])),
            json!(CONV.replace('a', "g")),
            json!(""),
            json!(7),
            Value::Null,
        ]
    }

    /// `base` with `field` set to each value (and once removed), as sample bodies.
    fn vary(base: &Value, field: &str, values: Vec<Value>) -> Vec<Value> {
        let mut out = vec![];
        let mut without = base.clone();
        without.as_object_mut().expect("object").remove(field);
        out.push(without);
        for v in values {
            let mut b = base.clone();
            b[field] = v;
            out.push(b);
        }
        out
    }

    /// Asserts that the schema `name` allows exactly the samples `accept` accepts.
    fn agree(doc: &Value, name: &str, samples: &[Value], accept: impl Fn(Value) -> Outcome) {
        let v = validator(doc, name);
        let mut allowed = 0;
        for s in samples {
            let by_schema = v.is_valid(s);
            let shown: String = s.to_string().chars().take(300).collect();
            match accept(s.clone()) {
                Ok(()) => assert!(
                    by_schema,
                    "{name}: the schema forbids what is accepted: {shown}"
                ),
                // A byte limit a schema cannot state (it counts characters): the one refusal
                // a body the schema allows may get, and its description says so.
                Err(ErrorCode::MessageTooLarge) => {}
                Err(code) => assert!(
                    !by_schema,
                    "{name}: the schema allows what is refused ({code}): {shown}"
                ),
            }
            allowed += by_schema as usize;
        }
        assert!(allowed > 0 && allowed < samples.len(), "{name}: {allowed}");
    }

    /// What the gateway does with a body: accepts it, or refuses it with a code.
    type Outcome = std::result::Result<(), ErrorCode>;

    /// A body as the HTTP layer reads it: a JSON shape error is `INVALID_ARGUMENT`.
    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> std::result::Result<T, ErrorCode> {
        serde_json::from_value(v).map_err(|_| ErrorCode::InvalidArgument)
    }

    fn checked<T>(r: std::result::Result<T, bongsu_proto::ModelError>) -> Outcome {
        r.map(|_| ()).map_err(|e| e.code)
    }

    fn doc() -> Value {
        serde_json::to_value(document()).expect("serializable")
    }

    #[test]
    fn sign_up_bodies() {
        let base = json!({"handle": "jisoo", "password": "correct horse",
                          "device": {"kind": "phone", "name": "Jisoo's phone"}});
        let mut samples = vary(
            &base,
            "handle",
            vec![
                json!("ab"),
                json!(" Kim.Minji_7 "),
                json!("x".repeat(32)),
                json!("x".repeat(33)),
                json!(".abc"),
                json!("a-b"),
                json!(5),
            ],
        );
        samples.extend(vary(
            &base,
            "password",
            vec![
                json!("1234567"),
                json!("12345678"),
                json!("x".repeat(256)),
                json!("x".repeat(257)),
                json!("비밀번호가길다"),
                json!("비밀번호가아주길다"),
                json!(null),
            ],
        ));
        let devices = [
            json!({"kind": "web", "name": ""}),
            json!({"kind": "tablet", "name": "x".repeat(64)}),
            json!({"kind": "pc", "name": "x".repeat(65)}),
            json!({"kind": "pc", "name": "폰".repeat(64)}),
            json!({"kind": "pc", "name": "폰".repeat(65)}),
            json!({"kind": "toaster", "name": "x"}),
            json!({"name": "x"}),
            json!({"kind": "phone"}),
        ];
        samples.extend(vary(&base, "device", devices.to_vec()));
        agree(&doc(), "Credentials", &samples, |v| {
            let c = parse::<Credentials>(v)?;
            checked(req::SignUp::try_from(c.into_sign_up()))
        });
    }

    #[test]
    fn lookup_bodies() {
        let base = json!({"handles": ["jisoo"], "user_ids": [CONV]});
        let mut samples = vary(
            &base,
            "user_ids",
            ids().into_iter().map(|i| json!([i])).collect(),
        );
        samples.extend(vary(
            &base,
            "handles",
            vec![
                json!(vec!["no such handle!"; LOOKUP_MAX]),
                json!(vec!["abc"; LOOKUP_MAX + 1]),
                json!([1]),
            ],
        ));
        samples.push(json!({"user_ids": vec![CONV; LOOKUP_MAX + 1]}));
        agree(&doc(), "LookupBody", &samples, |v| {
            let r = parse::<LookupBody>(v)?.into_proto().map_err(|e| e.code)?;
            checked(req::Lookup::try_from(r))
        });
    }

    #[test]
    fn create_conversation_bodies() {
        let base = json!({"conv_id": UUID, "kind": "group", "members": [CONV]});
        let mut samples = vary(&base, "conv_id", ids());
        samples.extend(vary(
            &base,
            "kind",
            vec![json!("direct"), json!("channel"), json!("Group"), json!(1)],
        ));
        samples.extend(vary(
            &base,
            "members",
            ids().into_iter().map(|i| json!([i])).collect(),
        ));
        agree(&doc(), "CreateConversationBody", &samples, |v| {
            let r = parse::<CreateConversationBody>(v)?
                .into_proto()
                .map_err(|e| e.code)?;
            checked(req::NewConversation::try_from(r))
        });
    }

    #[test]
    fn change_members_bodies() {
        let base = json!({"add": [CONV], "remove": [UUID]});
        let mut samples = vary(
            &base,
            "add",
            ids().into_iter().map(|i| json!([i])).collect(),
        );
        samples.extend(vary(
            &base,
            "remove",
            vec![json!([]), json!([""]), json!(null)],
        ));
        samples.extend([
            json!({}),
            json!({"add": []}),
            json!({"add": [], "remove": []}),
        ]);
        samples.extend([
            json!({"remove": [CONV]}),
            json!({"add": [], "remove": [CONV]}),
        ]);
        agree(&doc(), "ChangeMembersBody", &samples, |v| {
            let r = parse::<ChangeMembersBody>(v)?
                .into_proto(vec![1; 16])
                .map_err(|e| e.code)?;
            checked(req::ChangeMembers::try_from(r))
        });
    }

    #[test]
    fn send_bodies() {
        let base = json!({"client_msg_id": CONV, "kind": "text", "text": "안녕"});
        let mut samples = vary(&base, "client_msg_id", ids());
        samples.extend(vary(
            &base,
            "kind",
            vec![
                json!("link_card"),
                json!("sealed"),
                json!("system"),
                json!("video"),
            ],
        ));
        samples.extend(vary(
            &base,
            "text",
            vec![
                json!(""),
                json!("x".repeat(65536)),
                json!("x".repeat(65537)),
                Value::Null,
            ],
        ));
        let b64 = json!({"client_msg_id": CONV, "kind": "sealed"});
        samples.extend(vary(
            &b64,
            "body_base64",
            vec![
                json!("3q2+7w=="),
                json!("3q2+7w"),
                json!("3q2+7w==="),
                json!("not base64!"),
                json!(""),
                json!("A".repeat(65536 / 3 * 4)),
                json!("A".repeat(87384)),
                json!("A".repeat(87388)),
                Value::Null,
            ],
        ));
        samples.push(
            json!({"client_msg_id": CONV, "kind": "text", "text": "hi", "body_base64": "aGk="}),
        );
        agree(&doc(), "SendBody", &samples, |v| {
            let r = parse::<SendBody>(v)?
                .into_proto(vec![1; 16])
                .map_err(|e| e.code)?;
            checked(req::Send::try_from(r))
        });
    }

    /// A body the schema allows may still be over the byte limit (more bytes than characters):
    /// that is refused with 413, which the schema's description states, never with 400.
    #[test]
    fn a_text_over_the_byte_limit_is_too_large_not_invalid() {
        let body = json!({"client_msg_id": CONV, "kind": "text", "text": "가".repeat(30_000)});
        assert!(validator(&doc(), "SendBody").is_valid(&body));
        let r = parse::<SendBody>(body)
            .expect("parses")
            .into_proto(vec![1; 16]);
        let e = req::Send::try_from(r.expect("converts")).expect_err("90,000 bytes");
        assert_eq!(e.code, bongsu_proto::ErrorCode::MessageTooLarge);
    }

    #[test]
    fn sync_bodies() {
        let base = json!({"cursors": {CONV: 4}, "limit_per_conversation": 10});
        let mut samples = vary(
            &base,
            "limit_per_conversation",
            vec![
                json!(0),
                json!(SYNC_MAX),
                json!(SYNC_MAX + 1),
                json!(-1),
                Value::Null,
            ],
        );
        let cursors = ids()
            .into_iter()
            .filter_map(|i| i.as_str().map(|s| json!({ s: 1 })))
            .chain([json!({CONV: -1}), json!({CONV: "1"}), json!({})])
            .collect();
        samples.extend(vary(&base, "cursors", cursors));
        agree(&doc(), "SyncBody", &samples, |v| {
            let r = parse::<SyncBody>(v)?.into_proto().map_err(|e| e.code)?;
            checked(req::Sync::try_from(r))
        });
    }

    /// The history page size, a query parameter, against its parameter schema.
    #[test]
    fn history_limits() {
        let doc = doc();
        let params = &doc["paths"]["/v1/conversations/{conv_id}/messages"]["get"]["parameters"];
        let limit = params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
            .expect("a limit parameter");
        let v = jsonschema::draft202012::new(&limit["schema"]).expect("compiles");
        for n in [0, 1, HISTORY_MAX, HISTORY_MAX + 1, u32::MAX] {
            let q = HistoryQuery {
                after: None,
                before: None,
                limit: Some(n),
            };
            let ok = req::History::try_from(q.into_proto(vec![1; 16])).is_ok();
            assert_eq!(v.is_valid(&json!(n)), ok, "limit={n}");
        }
        let conv = params
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "conv_id"))
            .expect("a conv_id parameter");
        assert_eq!(conv["schema"]["pattern"], bongsu_proto::model::ID_PATTERN);
    }
}
