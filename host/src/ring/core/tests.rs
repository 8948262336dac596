//! Two cores meeting in memory.
use super::*;
use crate::ring::wire::MAX_FRAME;

fn core(i: u8, peers: Vec<SocketAddr>) -> RingCore {
    RingCore::new(CoreParams {
        id: MemberId([i; 16]),
        addr: SocketAddr::from(([127, 0, 0, i], 9638)),
        generation: 1,
        persistent: false,
        config: RingConfig::default(),
        keyring: Keyring::with_primary(crate::crypto::RingKey::generate("t").unwrap()),
        peers,
        seed: u64::from(i),
        http_port: 0,
        restored: None,
    })
}

#[test]
fn two_cores_meet() {
    let mut a = core(1, vec![]);
    let mut b = core(2, vec![SocketAddr::from(([127, 0, 0, 1], 9638))]);
    let key = a.keyring().clone();
    *b.keyring_mut() = key;
    a.start(Duration::ZERO);
    b.start(Duration::ZERO);
    let mut now = Duration::ZERO;
    for _ in 0..100 {
        now += Duration::from_millis(50);
        a.tick(now);
        b.tick(now);
        for (from, to) in [(0, 1), (1, 0)] {
            let outs = if from == 0 { a.take_outputs() } else { b.take_outputs() };
            for o in outs {
                if let Output::Datagram { bytes, .. } = o {
                    if to == 0 { a.handle_datagram(now, &bytes) } else { b.handle_datagram(now, &bytes) }
                }
            }
        }
    }
    assert_eq!(a.members().iter().filter(|m| m.health == Health::Alive).count(), 2);
    assert_eq!(b.members().iter().filter(|m| m.health == Health::Alive).count(), 2);
    assert_eq!(b.with_store(|s| s.len()), 2, "member rumors spread");
}

/// Runs both cores for `steps` × 50 ms, delivering datagrams and push-pulls between them.
fn exchange(a: &mut RingCore, b: &mut RingCore, now: &mut Duration, steps: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..steps {
        *now += Duration::from_millis(50);
        a.tick(*now);
        b.tick(*now);
        for from in [0, 1] {
            let (src, dst) = if from == 0 { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
            for o in src.take_outputs() {
                match o {
                    Output::Datagram { bytes, .. } => dst.handle_datagram(*now, &bytes),
                    Output::PushPull { .. } => {
                        for f in src.pushpull_sealed() {
                            assert!(f.len() <= MAX_FRAME, "a push-pull frame of {} bytes", f.len());
                            let _ = dst.handle_pushpull(*now, &f);
                        }
                    }
                    Output::Event(e) if from == 1 => events.push(e),
                    _ => {}
                }
            }
        }
    }
    events
}

fn pair() -> (RingCore, RingCore) {
    let mut a = core(1, vec![]);
    let mut b = core(2, vec![SocketAddr::from(([127, 0, 0, 1], 9638))]);
    *b.keyring_mut() = a.keyring().clone();
    a.start(Duration::ZERO);
    b.start(Duration::ZERO);
    (a, b)
}

#[test]
fn events_say_up_then_left_then_departed() {
    let (mut a, mut b) = pair();
    let mut now = Duration::ZERO;
    let events = exchange(&mut a, &mut b, &mut now, 40);
    assert!(events.contains(&Event::MemberUp(MemberId([1; 16]))), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RumorChanged { origin: Origin::Gossip | Origin::PushPull, .. }))
    );
    a.leave();
    let events = exchange(&mut a, &mut b, &mut now, 10);
    assert!(events.contains(&Event::MemberLeft(MemberId([1; 16]))), "{events:?}");
    assert!(!events.contains(&Event::MemberDown(MemberId([1; 16]))), "a leave is not a failure");
    assert_eq!(b.members().iter().find(|m| m.ident.id == MemberId([1; 16])).unwrap().health, Health::Left);
    b.depart(MemberId([1; 16])).unwrap();
    let events = b.take_outputs();
    assert!(events.contains(&Output::Event(Event::MemberDeparted(MemberId([1; 16])))), "{events:?}");
}

#[test]
fn the_core_numbers_injected_rumors_and_refuses_member_rumors() {
    let (mut a, _) = pair();
    let svc = |inc| {
        Rumor::Service(proto::ServiceRumor {
            service_group: "redis.default".into(),
            member_id: "someone else".into(),
            incarnation: inc,
            ..Default::default()
        })
    };
    assert!(a.inject(svc(u64::MAX)).unwrap());
    assert!(a.inject(svc(5)).unwrap(), "the next change is news, whatever the client said");
    let stored = a.with_store(|s| s.of_kind(RumorKind::Service).cloned().collect::<Vec<_>>());
    match &stored[..] {
        [Rumor::Service(s)] => {
            assert_eq!(s.incarnation, 2);
            assert_eq!(s.member_id, MemberId([1; 16]).to_string(), "said by this member");
        }
        other => panic!("{other:?}"),
    }
    let forged =
        Rumor::Member(proto::MemberRumor { id: MemberId([9; 16]).to_string(), ..Default::default() });
    assert_eq!(a.inject(forged), Err(RumorError::NotInjectable));
}

#[test]
fn published_versions_are_kept_and_a_version_the_ring_holds_is_refused_with_the_current_one() {
    let (mut a, mut b) = pair();
    let cfg = |v: u64, text: &str| {
        Rumor::ServiceConfig(proto::ServiceConfigRumor {
            service_group: "redis.default@acme".into(),
            incarnation: v,
            config: text.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    assert_eq!(a.publish(cfg(0, "x = 1")), Err(RumorError::VersionZero));
    assert!(a.publish(cfg(7, "x = 1")).unwrap());
    let current = |c: &RingCore| {
        c.with_store(|s| s.of_kind(RumorKind::ServiceConfig).filter_map(Rumor::incarnation).max())
    };
    assert_eq!(current(&a), Some(7), "the author's version, not the ring's numbering");
    // Habitat drops an equal or older version without a word (#3009): here it is an error
    // that names the version to beat, whoever holds it.
    assert_eq!(a.publish(cfg(7, "x = 2")), Err(RumorError::StaleVersion { offered: 7, current: 7 }));
    let mut now = Duration::ZERO;
    exchange(&mut a, &mut b, &mut now, 50);
    assert_eq!(current(&b), Some(7));
    assert_eq!(b.publish(cfg(3, "x = 3")), Err(RumorError::StaleVersion { offered: 3, current: 7 }));
    let e = b.publish(cfg(3, "x = 3")).unwrap_err().to_string();
    assert!(e.contains("current version 7") && e.contains("use 8"), "{e}");
    assert!(b.publish(cfg(8, "x = 3")).unwrap());
    let file = Rumor::ServiceFile(proto::ServiceFileRumor {
        service_group: "redis.default@acme".into(),
        filename: "a.conf".into(),
        incarnation: 1,
        ..Default::default()
    });
    assert!(b.publish(file).unwrap(), "files are versioned per name");
    let svc = Rumor::Service(proto::ServiceRumor { incarnation: 9, ..Default::default() });
    assert_eq!(b.publish(svc), Err(RumorError::NotVersioned));
}

#[test]
fn a_store_bigger_than_one_frame_still_converges_by_chunks() {
    let (mut a, mut b) = pair();
    // 24 rumors of 900 KB: ~21 MiB, more than any one frame may carry.
    for i in 0..24 {
        a.inject(Rumor::ServiceFile(proto::ServiceFileRumor {
            service_group: "big.default".into(),
            filename: format!("f{i}"),
            body: vec![b'x'; 900 * 1024],
            ..Default::default()
        }))
        .unwrap();
    }
    assert!(a.pushpull_sealed().len() >= 20, "state travels in chunks");
    let mut now = Duration::ZERO;
    exchange(&mut a, &mut b, &mut now, 200);
    assert_eq!(b.with_store(|s| s.count(RumorKind::ServiceFile)), 24);
}

#[test]
fn departed_members_rumors_expire_and_old_tombstones_do_not_come_back() {
    let (mut a, _) = pair();
    a.set_wall_clock(1_000_000);
    let gone = MemberId([7; 16]);
    a.depart(gone).unwrap();
    assert!(a.with_store(|s| s.is_departed(&gone.to_string())));
    let retention = a.config().departed_retention.as_secs();
    a.set_wall_clock(1_000_000 + retention);
    a.tick(Duration::from_secs(3600));
    let outs = a.take_outputs();
    assert!(outs.iter().any(|o| matches!(o, Output::Event(Event::RumorRemoved { .. }))), "{outs:?}");
    assert!(!a.with_store(|s| s.is_departed(&gone.to_string())), "the id may rejoin");
    // A lagging member gossiping the old tombstone does not revive it.
    let old = Rumor::Departure(proto::DepartureRumor { member_id: gone.to_string(), departed_at: 1_000_000 });
    assert_eq!(a.merge_rumor(old, Origin::PushPull), Ok(None));
}

/// Lifeguard: a member that stops answering is suspected by both others; each tells the other,
/// and the independent confirmation brings the suspicion down from its longest to its shortest
/// timeout (in simulated time, deterministic for these seeds).
#[test]
fn a_confirmed_suspicion_ends_at_the_short_timeout() {
    let peer = SocketAddr::from(([127, 0, 0, 1], 9638));
    let mut cores = vec![core(1, vec![]), core(2, vec![peer]), core(3, vec![peer])];
    let key = cores[0].keyring().clone();
    for c in &mut cores[1..] {
        *c.keyring_mut() = key.clone();
    }
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, i as u8 + 1], 9638));
    for c in &mut cores {
        c.start(Duration::ZERO);
    }
    let step = Duration::from_millis(20);
    let mut now = Duration::ZERO;
    let mut dead = false;
    let (mut suspected_at, mut down_at) = (None, None);
    let mut suspecters = std::collections::BTreeSet::new();
    let victim = MemberId([3; 16]);
    for _ in 0..3000 {
        now += step;
        if now >= Duration::from_secs(10) && !dead {
            dead = true;
        }
        for i in 0..3 {
            if dead && i == 2 {
                cores[i].take_outputs();
                continue;
            }
            cores[i].tick(now);
            for o in cores[i].take_outputs() {
                match o {
                    Output::Datagram { to, bytes } => {
                        if let Some(j) = (0..3).find(|j| addr(*j) == to)
                            && !(dead && j == 2)
                        {
                            cores[j].handle_datagram(now, &bytes);
                        }
                    }
                    Output::Event(Event::MemberSuspect(m)) if m == victim && dead => {
                        suspected_at.get_or_insert(now);
                        suspecters.insert(i);
                    }
                    Output::Event(Event::MemberDown(m)) if m == victim => {
                        down_at.get_or_insert(now);
                    }
                    _ => {}
                }
            }
        }
        if down_at.is_some() {
            break;
        }
    }
    let cfg = RingConfig::default();
    let min = crate::ring::suspicion::min_timeout(cfg.suspicion_mult, 3, cfg.probe_interval);
    let max = min * cfg.suspicion_max_mult;
    let (s, d) = (suspected_at.expect("the victim was suspected"), down_at.expect("and confirmed dead"));
    assert_eq!(suspecters.len(), 2, "both survivors suspected it independently");
    // Without the other's confirmation each suspicion would run to `max`; with it, the first
    // verdict comes at about `min` after the first suspicion.
    let took = d - s;
    assert!(took < max, "suspicion lasted {took:?}: the confirmation did not shorten it (max {max:?})");
    assert!(took <= min + cfg.probe_interval * 2, "{took:?}, expected about {min:?}");
}

/// A suspect that refutes is reported alive again: foca notifies no change there (the member
/// stays active), and the census and published views kept it `suspect` for good.
#[test]
fn a_refuted_suspicion_is_reported_as_alive_again() {
    let (mut a, mut b) = pair();
    let b_id = MemberId([2; 16]);
    let mut now = Duration::ZERO;
    exchange(&mut a, &mut b, &mut now, 100);
    assert!(a.members().iter().any(|m| m.ident.id == b_id && m.health == Health::Alive));
    // b's replies are lost until a suspects it; then the network is whole again.
    let mut a_events = Vec::new();
    let mut lossy = true;
    let mut while_suspect = None;
    for _ in 0..600 {
        now += Duration::from_millis(20);
        a.tick(now);
        b.tick(now);
        for o in a.take_outputs() {
            match o {
                Output::Datagram { bytes, .. } => b.handle_datagram(now, &bytes),
                Output::Event(e) => {
                    if e == Event::MemberSuspect(b_id) && lossy {
                        lossy = false;
                        while_suspect = Some(a.membership_fingerprint());
                    }
                    a_events.push(e);
                }
                _ => {}
            }
        }
        for o in b.take_outputs() {
            if let Output::Datagram { bytes, .. } = o
                && !lossy
            {
                a.handle_datagram(now, &bytes);
            }
        }
    }
    let suspected = a_events.iter().position(|e| *e == Event::MemberSuspect(b_id));
    let suspected = suspected.expect("a suspected b while its replies were lost");
    assert!(!a_events.contains(&Event::MemberDown(b_id)), "b refuted in time: {a_events:?}");
    assert!(
        a_events[suspected..].contains(&Event::MemberUp(b_id)),
        "no event said b is alive again: {a_events:?}"
    );
    let seen = a.members().into_iter().find(|m| m.ident.id == b_id).expect("a lists b");
    assert_eq!(seen.health, Health::Alive);
    assert!(seen.incarnation > 1, "b refuted with a higher incarnation: {}", seen.incarnation);
    // What the shell republishes views on.
    assert_ne!(while_suspect, Some(a.membership_fingerprint()), "the refutation changed no fingerprint");
}
