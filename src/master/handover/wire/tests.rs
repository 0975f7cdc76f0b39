use super::*;

fn state() -> State {
    State {
        protocol: PROTOCOL,
        from_pid: 10,
        from_version: "0.1.0".into(),
        name: "web".into(),
        slots: 6,
        routes: 64,
        runtime_dir: "/run/flora".into(),
        status_requested: Some("127.0.0.1:0".into()),
        generation: 3,
        target: 2,
        lent: vec![2, 3, 4, 5],
        workers: vec![(0, 100), (1, 101)],
        fds: vec![
            FdRole::Lock,
            FdRole::Segment,
            FdRole::Control {
                path: "/run/flora/web.sock".into(),
                file: Some((1, 2)),
            },
            FdRole::Tcp {
                requested: vec!["127.0.0.1:0".into()],
                local: "127.0.0.1:4000".parse().unwrap(),
            },
        ],
        carried: serde_json::json!({"x": 1}),
    }
}

fn expect() -> Expect {
    Expect {
        name: "web".into(),
        slots: 6,
        routes: 64,
        runtime_dir: "/run/flora".into(),
        control_socket: "/run/flora/web.sock".into(),
        status_requested: Some("127.0.0.1:0".into()),
    }
}

#[test]
fn a_matching_state_is_accepted() {
    assert_eq!(validate(&state(), &expect()), Ok(()));
}

#[test]
fn each_difference_is_refused_by_name() {
    type Case = (&'static str, fn(&mut State, &mut Expect));
    let cases: [Case; 10] = [
        ("protocol", |s, _| s.protocol = 99),
        ("instance", |_, e| e.name = "api".into()),
        ("--slots", |_, e| e.slots = 8),
        ("route slots", |_, e| e.routes = 32),
        ("runtime dir", |_, e| e.runtime_dir = "/tmp".into()),
        ("--status-addr", |_, e| e.status_requested = None),
        ("control socket", |_, e| e.control_socket = "/x.sock".into()),
        ("lock", |s, _| s.fds.retain(|f| *f != FdRole::Lock)),
        ("free slots", |s, _| s.lent = vec![0, 2]),
        ("beyond", |s, _| s.workers.push((9, 5))),
    ];
    for (word, change) in cases {
        let (mut s, mut e) = (state(), expect());
        change(&mut s, &mut e);
        let err = validate(&s, &e).unwrap_err();
        assert!(err.contains(word), "{word}: {err}");
    }
}

#[test]
fn messages_round_trip() {
    let msgs = [
        FromNew::Hello {
            protocol: 1,
            version: "0.1.0".into(),
            layout_hash: 7,
            pid: 4,
        },
        FromNew::Accepted,
        FromNew::Ready {
            version: "0.2.0".into(),
        },
        FromNew::Committed,
        FromNew::Refused { reason: "x".into() },
    ];
    for m in msgs {
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<FromNew>(&text).unwrap(), m);
    }
    let text = serde_json::to_string(&FromOld::Fds { count: 3 }).unwrap();
    assert_eq!(text, r#"{"type":"fds","count":3}"#);
    let s = state();
    let back: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}
