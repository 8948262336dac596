//! Two cores meeting in memory.
use super::*;

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
