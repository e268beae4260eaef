use super::*;

#[test]
fn ids_round_trip_through_hex_and_bytes() {
    let id = ConvId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let s = id.to_string();
    assert_eq!(s, "0123456789abcdef0011223344556677");
    assert_eq!(s.parse::<ConvId>().unwrap(), id);
    assert_eq!(ConvId::try_from(&id.0[..]).unwrap(), id);
}

#[test]
fn malformed_ids_are_rejected_with_the_field_name() {
    let table: &[&[u8]] = &[b"", b"short", &[0u8; 17]];
    for bytes in table {
        let err = UserId::try_from(*bytes).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.field, "user_id");
    }
    for s in ["", "xyz", "0123456789abcdef001122334455667g", "0123"] {
        assert!(s.parse::<ConvId>().is_err(), "{s:?} parsed");
    }
}

#[test]
fn bodies_are_checked_for_size_and_utf8() {
    assert!(validate_body(MessageKind::Text, "안녕".as_bytes(), 16).is_ok());
    let too_big = validate_body(MessageKind::Text, &[b'a'; 17], 16).unwrap_err();
    assert_eq!(too_big.code, ErrorCode::MessageTooLarge);
    let bad_utf8 = validate_body(MessageKind::Text, &[0xff, 0xfe], 16).unwrap_err();
    assert_eq!(bad_utf8.code, ErrorCode::InvalidArgument);
    // Sealed bodies are ciphertext: any bytes are fine, only the size counts.
    assert!(validate_body(MessageKind::Sealed, &[0xff, 0xfe], 16).is_ok());
}

#[test]
fn error_codes_have_distinct_stable_names() {
    let names: std::collections::HashSet<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len());
    assert_eq!(ErrorCode::NotMember.as_str(), "NOT_MEMBER");
    assert_eq!(ErrorCode::MessageTooLarge.as_str(), "MESSAGE_TOO_LARGE");
    assert_eq!(ErrorCode::NotLeader.as_str(), "NOT_LEADER");
}

/// Codes are only ever added at the end: a new code keeps the next number on the wire, and
/// its place in `ALL` (which is also its index in postcard, in stored rejections).
#[test]
fn the_newest_codes_keep_their_numbers() {
    assert_eq!(ErrorCode::EventsPruned.as_str(), "EVENTS_PRUNED");
    assert_eq!(ErrorCode::EventsPruned.to_proto() as i32, 23);
    assert_eq!(
        ErrorCode::UpgradeNotFinished.as_str(),
        "UPGRADE_NOT_FINISHED"
    );
    assert_eq!(ErrorCode::UpgradeNotFinished.to_proto() as i32, 24);
    assert_eq!(ErrorCode::PermissionDenied.as_str(), "PERMISSION_DENIED");
    assert_eq!(ErrorCode::PermissionDenied.to_proto() as i32, 25);
    assert_eq!(ErrorCode::ALL.last(), Some(&ErrorCode::PermissionDenied));
    assert_eq!(
        ErrorCode::ALL[ErrorCode::ALL.len() - 2],
        ErrorCode::UpgradeNotFinished
    );
    assert_eq!(ErrorCode::ClusterMismatch.to_proto() as i32, 22);
}

#[test]
fn proto_messages_are_validated_on_receive() {
    let good = v1::Message {
        conv_id: vec![1; 16],
        seq: 3,
        sender: vec![2; 16],
        device: vec![3; 16],
        client_msg_id: vec![4; 16],
        kind: v1::MessageKind::Text as i32,
        body: b"hi".to_vec(),
        sent_at_ms: 1,
    };
    let m = Message::try_from(good.clone()).unwrap();
    assert_eq!(v1::Message::from(m), good);

    let mut bad_kind = good.clone();
    bad_kind.kind = 99;
    assert_eq!(Message::try_from(bad_kind).unwrap_err().field, "kind");
    let mut bad_conv = good;
    bad_conv.conv_id = vec![1; 3];
    assert_eq!(Message::try_from(bad_conv).unwrap_err().field, "conv_id");
}

#[test]
fn shard_of_is_stable_and_spreads() {
    // Fixed values (checked against an independent FNV-1a): changing the hash would move every conversation of a running cluster.
    assert_eq!(shard_of(&[0; 16], 64), shard_of(&[0; 16], 64));
    assert_eq!(shard_of(&ConvId::from_u128(1).0, 64), 50);
    assert_eq!(shard_of(&ConvId::from_u128(2).0, 64), 63);
    let mut counts = vec![0u32; 64];
    for i in 0..64_000u128 {
        counts[shard_of(&ConvId::from_u128(i * 7919).0, 64) as usize] += 1;
    }
    assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
}

#[test]
fn handles_are_normalized_or_refused() {
    assert_eq!(normalize_handle(" Kim.Minji_7 ").unwrap(), "kim.minji_7");
    for bad in [
        "ab",
        "",
        &"x".repeat(33),
        "김민지",
        "a b c",
        ".abc",
        "abc.",
        "a-b-c",
        "ab@c",
    ] {
        let e = normalize_handle(bad).unwrap_err();
        assert_eq!(
            (e.code, e.field),
            (ErrorCode::InvalidArgument, "handle"),
            "{bad:?}"
        );
    }
}

/// A status without a stable code is judged by one rule everywhere: the code it falls back to
/// answers with the same gRPC code (a permission error stays a permission error, a bad request
/// a bad request), and a status that carries a code keeps it.
#[test]
fn the_grpc_fallback_stays_within_the_grpc_code() {
    for c in ErrorCode::ALL {
        let back = ErrorCode::from_grpc(c.grpc_code());
        assert_eq!(back.grpc_code(), c.grpc_code(), "{c} -> {back}");
        let mut s = tonic::Status::new(c.grpc_code(), "x");
        s.metadata_mut()
            .insert(CODE_KEY, c.as_str().parse().expect("ascii code"));
        assert_eq!(ErrorCode::of_status_or_grpc(&s), c);
    }
    for code in [
        tonic::Code::Internal,
        tonic::Code::Unknown,
        tonic::Code::Unimplemented,
        tonic::Code::DeadlineExceeded,
        tonic::Code::Cancelled,
        tonic::Code::Aborted,
    ] {
        let s = tonic::Status::new(code, "from a proxy");
        assert_eq!(
            ErrorCode::of_status_or_grpc(&s),
            ErrorCode::Unavailable,
            "{code:?}"
        );
    }
    assert_eq!(
        ErrorCode::of_status_or_grpc(&tonic::Status::permission_denied("no code")),
        ErrorCode::NotMember
    );
}

/// Strings from a small alphabet, every length in `lens`, from a fixed-seed generator: enough
/// to hit each rule's edges (lengths, separators, case, whitespace) many times over.
fn samples(alphabet: &[u8], lens: std::ops::Range<usize>, per_len: usize) -> Vec<String> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::new();
    for len in lens {
        for _ in 0..per_len {
            let s = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize] as char
                })
                .collect();
            out.push(s);
        }
    }
    out
}

/// The OpenAPI document states `ID_PATTERN`; the parser must accept exactly what it matches.
#[test]
fn the_id_pattern_is_exactly_what_ids_parse() {
    let re = regex::Regex::new(ID_PATTERN).unwrap();
    let mut table: Vec<String> = vec![
        "0123456789abcdef0123456789abcdef".into(),
        "0123456789ABCDEF0123456789abcdef".into(),
        "01234567-89ab-cdef-0123-456789abcdef".into(),
        "0123456789ab-cdef-0123-456789abcdef".into(),
        "-0123456789abcdef0123456789abcdef".into(),
        "01234567-89ab-cdef-0123-456789abcde-".into(),
        " 0123456789abcdef0123456789abcdef".into(),
    ];
    table.extend(samples(b"0aF9-g", 30..38, 300));
    // Mostly-valid ids with one dash moved or one character changed.
    let uuid = "01234567-89ab-cdef-0123-456789abcdef";
    for i in 0..uuid.len() {
        for c in ['-', 'x', 'A'] {
            let mut s: Vec<char> = uuid.chars().collect();
            s[i] = c;
            table.push(s.into_iter().collect());
        }
    }
    let mut accepted = 0;
    for s in &table {
        let parsed = s.parse::<ConvId>().is_ok();
        assert_eq!(re.is_match(s), parsed, "{s:?}");
        accepted += parsed as usize;
    }
    assert!(accepted > 10 && accepted < table.len() - 10, "{accepted}");
}

/// The OpenAPI document states `HANDLE_PATTERN`; sign-up must accept exactly what it matches.
#[test]
fn the_handle_pattern_is_exactly_what_handles_normalize() {
    let re = regex::Regex::new(HANDLE_PATTERN).unwrap();
    let mut table = samples(b"aZ9_. \t-", 0..36, 200);
    table.extend([
        "김민지".to_string(),
        "\u{a0}abc".into(),
        "abc\u{2003}".into(),
    ]);
    let mut accepted = 0;
    for s in &table {
        let ok = normalize_handle(s).is_ok();
        assert_eq!(re.is_match(s), ok, "{s:?}");
        accepted += ok as usize;
    }
    assert!(accepted > 100 && accepted < table.len() - 100, "{accepted}");
}

#[test]
fn page_sizes_default_at_zero_and_are_refused_above_the_maximum() {
    assert_eq!(page_limit("limit", 0, 50, 1000), Ok(50));
    assert_eq!(page_limit("limit", 1000, 50, 1000), Ok(1000));
    let e = page_limit("limit", 1001, 50, 1000).unwrap_err();
    assert_eq!((e.code, e.field), (ErrorCode::InvalidArgument, "limit"));
}

mod requests {
    use super::super::requests::*;
    use super::super::*;

    fn send(kind: v1::MessageKind, body: Vec<u8>) -> v1::SendRequest {
        v1::SendRequest {
            conv_id: vec![1; 16],
            client_msg_id: vec![2; 16],
            kind: kind as i32,
            body,
        }
    }

    #[test]
    fn sends_are_checked_for_kind_size_and_ids() {
        let ok = Send::try_from(send(v1::MessageKind::Text, b"hi".to_vec())).unwrap();
        assert_eq!((ok.kind, ok.conv), (MessageKind::Text, ConvId([1; 16])));
        let system = Send::try_from(send(v1::MessageKind::System, b"hi".to_vec()));
        assert_eq!(system.unwrap_err().field, "kind");
        let big = vec![b'a'; DEFAULT_MAX_BODY_BYTES + 1];
        let e = Send::try_from(send(v1::MessageKind::Sealed, big)).unwrap_err();
        assert_eq!(e.code, ErrorCode::MessageTooLarge);
        let mut short = send(v1::MessageKind::Text, vec![]);
        short.conv_id.pop();
        assert_eq!(Send::try_from(short).unwrap_err().field, "conv_id");
    }

    /// What a gateway forwards, the node reads back as the same validated send.
    #[test]
    fn an_append_round_trips_through_the_internal_write() {
        let a = Append {
            sender: UserId([3; 16]),
            device: DeviceId([4; 16]),
            send: Send::try_from(send(v1::MessageKind::LinkCard, b"x".to_vec())).unwrap(),
        };
        let pb = crate::internal::AppendMessage::from(a.clone());
        assert_eq!(Append::try_from(pb.clone()).unwrap(), a);
        let mut bad = pb;
        bad.kind = v1::MessageKind::System as i32;
        assert!(Append::try_from(bad).is_err());
    }

    #[test]
    fn page_sizes_above_the_maximum_are_refused_not_cut() {
        let h = |limit| {
            History::try_from(v1::HistoryRequest {
                conv_id: vec![1; 16],
                after: 0,
                before: 0,
                limit,
            })
        };
        assert_eq!(h(0).unwrap().limit, HISTORY_DEFAULT);
        assert_eq!(h(HISTORY_MAX).unwrap().limit, HISTORY_MAX);
        assert_eq!(h(HISTORY_MAX + 1).unwrap_err().field, "limit");
        let s = |limit_per_conversation| {
            Sync::try_from(v1::SyncRequest {
                cursors: vec![],
                limit_per_conversation,
            })
        };
        assert_eq!(s(0).unwrap().limit, SYNC_DEFAULT);
        let e = s(SYNC_MAX + 1).unwrap_err();
        assert_eq!(e.field, "limit_per_conversation");
    }

    #[test]
    fn devices_need_a_kind_and_a_short_name() {
        let ok = v1::DeviceInfo {
            kind: v1::DeviceKind::Phone as i32,
            name: "x".repeat(DEVICE_NAME_MAX),
        };
        assert!(Device::try_from(Some(ok.clone())).is_ok());
        assert!(Device::try_from(None).is_err());
        for bad in [
            v1::DeviceInfo {
                kind: 0,
                ..ok.clone()
            },
            v1::DeviceInfo {
                kind: 99,
                ..ok.clone()
            },
            v1::DeviceInfo {
                name: "x".repeat(DEVICE_NAME_MAX + 1),
                ..ok.clone()
            },
        ] {
            let e = Device::try_from(Some(bad)).expect_err("bad");
            assert_eq!(e.code, ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn lookups_are_bounded_and_drop_impossible_handles() {
        let l = Lookup::try_from(v1::LookupUsersRequest {
            handles: vec!["Jisoo".into(), "no way".into()],
            user_ids: vec![vec![5; 16]],
        })
        .unwrap();
        assert_eq!(l.handles, ["jisoo"]);
        let too_many = v1::LookupUsersRequest {
            handles: vec!["abc".into(); LOOKUP_MAX + 1],
            user_ids: vec![],
        };
        assert_eq!(Lookup::try_from(too_many).unwrap_err().field, "handles");
    }
}

#[test]
fn password_length_rules() {
    assert!(check_password("short").is_err());
    assert!(check_password(&"x".repeat(257)).is_err());
    assert!(check_password("12345678").is_ok());
    assert!(check_password(&"x".repeat(256)).is_ok());
}

/// `json_name` (used by the OpenAPI schemas) is the name serde writes and reads.
#[test]
fn kind_names_are_what_serde_writes() {
    fn check<K: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        all: &[K],
        name: impl Fn(&K) -> &'static str,
    ) {
        for k in all {
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", name(k)));
            assert_eq!(&serde_json::from_str::<K>(&json).unwrap(), k);
        }
    }
    check(ConversationKind::ALL, |k| k.json_name());
    check(MessageKind::ALL, |k| k.json_name());
    check(DeviceKind::ALL, |k| k.json_name());
    assert_eq!(MessageKind::LinkCard.json_name(), "link_card");
}
