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
