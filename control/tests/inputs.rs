//! Untrusted input contained: keepalives longer than the receive buffer
//! and floods that overflow the socket queue are counted; admin
//! connections are capped per peer, closed when idle or when their unread
//! answers pass the cap, and a request from a client that has gone is not
//! applied.

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod lab;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    net::{SocketAddr, UdpSocket},
    os::unix::net::UnixStream,
    time::Duration,
};

use ferry::api::protocol::{Envelope, Request, VERSION};
use lab::*;

/// A keepalive with Session ID `sid` (element length 22).
fn keepalive(sid: u8) -> Vec<u8> {
    let mut d = vec![
        0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0, 0x00, 0x16, 0x00, 0x23, 0x00, 0x10,
    ];
    d.extend_from_slice(&[sid; 16]);
    d
}

/// The node's keepalive counters.
fn ka(lab: &Lab) -> serde_json::Value {
    lab.json(&["status"])["keepalive"].clone()
}

#[test]
fn oversized_keepalives_and_socket_overflow_are_counted() {
    let lab = Lab::new("kov", &Lab::tunnels_toml());
    lab.write_config(&Lab::tunnels_toml(), "[keepalive]\nunknown_rate = 1000\n");
    lab.start();
    let ac = SocketAddr::new(AC.into(), 5247);
    // From the AC namespace itself: loopback carries a 3 kB datagram whole.
    let (small, big) = lab
        .ac
        .enter(|| {
            let s = UdpSocket::bind("198.18.0.1:0")?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            let mut buf = [0u8; 4096];
            s.send_to(&keepalive(7), ac)?;
            let small = s.recv_from(&mut buf).is_ok();
            // A keepalive header and Session ID, then 3000 bytes: cut at
            // 2048 it would still parse, and be echoed cut short.
            let mut d = keepalive(7);
            d.resize(3000, 0);
            s.send_to(&d, ac)?;
            let big = s.recv_from(&mut buf).ok().map(|(n, _)| n);
            Ok::<_, anyhow::Error>((small, big))
        })
        .unwrap();
    assert!(small, "a normal keepalive is answered");
    assert_eq!(big, None, "an oversized one is not echoed, cut or whole");
    assert_eq!(ka(&lab)["oversized"].as_u64(), Some(1));

    // The receive queue overflows while ferry is stopped; the kernel's
    // count comes with the next datagram ferry reads.
    lab.signal(libc::SIGSTOP);
    lab.ac
        .enter(|| {
            let s = UdpSocket::bind("198.18.0.1:0")?;
            for _ in 0..20_000 {
                let _ = s.send_to(&keepalive(8), ac);
            }
            Ok::<_, anyhow::Error>(())
        })
        .unwrap();
    lab.signal(libc::SIGCONT);
    lab.wait_for(5, "kernel drops counted", || {
        lab.ac
            .enter(|| {
                let s = UdpSocket::bind("198.18.0.1:0")?;
                s.send_to(&keepalive(9), ac)?;
                Ok::<_, anyhow::Error>(())
            })
            .unwrap();
        ka(&lab)["kernel_drops"].as_u64().is_some_and(|n| n > 0)
    });
    let text = lab.scrape();
    assert!(
        text.lines()
            .any(|l| l.starts_with("ferry_keepalive_socket_drops_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}

/// One admin request line, as the CLI sends it.
fn request_line(r: Request) -> Vec<u8> {
    let mut l = serde_json::to_vec(&Envelope {
        v: VERSION,
        request: r,
    })
    .unwrap();
    l.push(b'\n');
    l
}

#[test]
fn admin_connections_are_capped_timed_out_and_gone_clients_not_served() {
    let lab = Lab::new("adm", &Lab::tunnels_toml());
    lab.start();

    // One peer (this process) gets 16 connections; the 17th is closed at
    // once, and other peers (the CLI) are still served.
    let held: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&lab.socket).unwrap())
        .collect();
    let mut extra = UnixStream::connect(&lab.socket).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(extra.read(&mut b), Ok(0)),
        "closed by ferry (EOF, not a timeout)"
    );
    let st = lab.json(&["status"]);
    assert!(
        st["connections"]["admin"]["over_cap"].as_u64().unwrap() >= 1,
        "{st}"
    );

    // Idle connections are closed after 10 s.
    let mut idle = held;
    std::thread::sleep(Duration::from_secs(11));
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert!(
            matches!(s.read(&mut b), Ok(0)),
            "idle connection closed (EOF, not a timeout)"
        );
    }
    let st = lab.json(&["status"]);
    assert!(
        st["connections"]["admin"]["idle"].as_u64().unwrap() >= 16,
        "{st}"
    );

    // A client sends a tunnel add and gives up before ferry reads it (here
    // ferry is stopped; in the field, a full fd table or a slow loop).
    lab.signal(libc::SIGSTOP);
    {
        let mut s = UnixStream::connect(&lab.socket).unwrap();
        s.write_all(&request_line(Request::TunnelAdd {
            text: "[[tunnel]]\nap = \"late\"\naddress = \"198.18.1.99\"\n".into(),
        }))
        .unwrap();
    }
    lab.signal(libc::SIGCONT);
    lab.wait_for(3, "the gone client counted", || {
        lab.json(&["status"])["connections"]["admin"]["gone_unserved"].as_u64() == Some(1)
    });
    assert_eq!(lab.aps(), vec!["ap1".to_string(), "ap2".to_string()]);
    assert!(lab.log().contains("not served"), "{}", lab.log());
}

/// A client that pipelines requests and never reads the answers is closed
/// once the answers queued for it pass the cap (256 MiB), and ferry stops
/// building answers there: one write of requests must not cost gigabytes.
#[test]
fn answers_a_client_does_not_read_are_capped() {
    let tunnels = format!("{}{}", Lab::tunnels_toml(), Lab::filler_toml("f", 4000, 0));
    let lab = Lab::new("ovf", &tunnels);
    lab.start();
    let one = {
        let mut s = UnixStream::connect(&lab.socket).unwrap();
        s.write_all(&request_line(Request::Tunnels)).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line).unwrap();
        line.len()
    };
    // Enough requests for three times the cap.
    let n = 3 * (256 << 20) / one + 1;
    let hwm = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let before = hwm(lab.pid());
    let mut s = UnixStream::connect(&lab.socket).unwrap();
    let burst: Vec<u8> = (0..n)
        .flat_map(|_| request_line(Request::Tunnels))
        .collect();
    s.write_all(&burst).unwrap();
    lab.wait_for(60, "the overflowing connection closed", || {
        lab.json(&["status"])["connections"]["admin"]["overflow"].as_u64() == Some(1)
    });
    let grew_mib = (hwm(lab.pid()) - before) / 1024;
    assert!(
        grew_mib < 2 * 256,
        "{n} answers of {one} bytes queued: peak memory grew {grew_mib} MiB"
    );
    // What the kernel had buffered is readable, then EOF.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    s.read_to_end(&mut sink).unwrap();
    assert!(sink.len() < n * one, "not every answer was built");
    assert!(
        lab.log().contains("does not read its answers"),
        "{}",
        lab.log()
    );
}

/// The metrics listener takes at most 8 connections per address and 32
/// in all: past either, a connection is closed at once (EOF) and counted,
/// and other scrapers are still served.
#[test]
fn metrics_connections_are_capped_per_address_and_in_all() {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
    let lab = Lab::new("mcap", &Lab::tunnels_toml());
    lab.start();
    // From 127.0.0.<from>: every loopback address is local.
    let connect = |from: u8| -> TcpStream {
        lab.ac
            .enter(|| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                s.bind(&SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, from), 0).into())?;
                s.connect(&SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9847).into())?;
                Ok::<_, anyhow::Error>(TcpStream::from(s))
            })
            .unwrap()
    };
    // EOF (closed by ferry), not a read timeout (open, waiting for a request).
    let closed = |s: &mut TcpStream| -> bool {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        matches!(s.read(&mut [0u8; 16]), Ok(0))
    };
    let mut held: Vec<TcpStream> = (0..8).map(|_| connect(1)).collect();
    assert!(closed(&mut connect(1)), "the 9th from one address");
    let mut other = connect(2);
    other
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    other.read_to_string(&mut page).unwrap();
    assert!(page.contains("ferry_"), "another address is served: {page}");
    for from in 2..=4 {
        held.extend((0..8).map(|_| connect(from)));
    }
    assert!(!closed(&mut held[31]), "the 32nd in all is open");
    assert!(closed(&mut connect(5)), "the 33rd in all");
    let st = lab.json(&["status"]);
    assert_eq!(
        st["connections"]["metrics"]["over_cap"].as_u64(),
        Some(2),
        "{st}"
    );
}
