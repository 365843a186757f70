//! The harness's loss and delay are real: UDP probes between two hosts whose sending
//! sides both have 20 % loss and 50 ms delay come back after about 100 ms, and about
//! 0.8 × 0.8 of them come back at all. (On this CI's kernel, without netem, this is the
//! NFQUEUE delay thread's doing.)

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cairn_tests::delay::enter;
use cairn_tests::netns::Hosts;

/// Subnet of this test (the fault scenarios use 51–58).
const SUBNET: u8 = 59;

#[test]
fn loss_and_delay_apply_to_every_packet_a_host_sends() {
    let hosts = match Hosts::create("im", SUBNET, 2) {
        Ok(hosts) => hosts,
        Err(why) => {
            eprintln!("SKIPPED: cannot make network namespaces here ({why}); run as root with iproute2");
            return;
        }
    };
    let how = [hosts.impair(0, 20, 50).unwrap(), hosts.impair(1, 20, 50).unwrap()];
    let echo_at = SocketAddr::new(hosts.addr(1), 9999);
    let (ns0, ns1) = (hosts.ns(0), hosts.ns(1));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    // Host 1 echoes each datagram for 4 s.
    let echo = std::thread::spawn(move || {
        enter(&ns1).unwrap();
        let socket = UdpSocket::bind(echo_at).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        ready_tx.send(()).unwrap();
        let until = Instant::now() + Duration::from_secs(4);
        let mut buf = [0u8; 64];
        while Instant::now() < until {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                socket.send_to(&buf[..n], from).unwrap();
            }
        }
    });
    ready_rx.recv().unwrap();
    // Host 0 sends 400 probes, 2 ms apart, and waits for their echoes.
    const PROBES: usize = 400;
    let (rtts, returned) = std::thread::spawn(move || {
        enter(&ns0).unwrap();
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        let start = Instant::now();
        let mut sent = vec![None; PROBES];
        let mut rtts = Vec::new();
        let mut next = 0;
        let mut buf = [0u8; 8];
        while start.elapsed() < Duration::from_millis(3_000) {
            if next < PROBES && start.elapsed() >= Duration::from_millis(2 * next as u64) {
                sent[next] = Some(Instant::now());
                socket.send_to(&(next as u64).to_le_bytes(), echo_at).unwrap();
                next += 1;
            }
            if let Ok(8) = socket.recv(&mut buf) {
                let i = u64::from_le_bytes(buf) as usize;
                if let Some(at) = sent.get_mut(i).and_then(Option::take) {
                    rtts.push(at.elapsed());
                }
            }
        }
        assert_eq!(next, PROBES, "every probe sent");
        let returned = rtts.len();
        (rtts, returned)
    })
    .join()
    .unwrap();
    echo.join().unwrap();
    let mut rtts = rtts;
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    let fraction = returned as f64 / PROBES as f64;
    let (passed, dropped) = hosts.delayed(0);
    eprintln!(
        "{how:?}: {returned} of {PROBES} probes came back ({fraction:.2}; expected 0.64), \
         round trip min {:?} median {median:?} max {:?}; host 0's thread passed {passed}, dropped {dropped}",
        rtts[0],
        rtts[rtts.len() - 1]
    );
    assert!((0.5..=0.78).contains(&fraction), "{fraction}");
    assert!(rtts[0] >= Duration::from_millis(99), "{:?}", rtts[0]);
    assert!(median < Duration::from_millis(150), "{median:?}");
}
