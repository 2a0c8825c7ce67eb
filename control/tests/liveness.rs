//! Liveness tied to the kernel: what a running node does when its pins are
//! deleted, its interface is deleted and re-created, another tool detaches
//! its program or takes the interface, and when it is started where its
//! pins could not outlive it (`ip netns exec`).

// Test code: a failed step should panic with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod lab;

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use aya::programs::XdpMode;
use ferry_dataplane::datapath::{Datapath, LinkHandle};
use ferry_ebpf::abi;
use lab::*;

fn traffic() -> Traffic {
    Traffic {
        min_frames: 1000,
        burst: 20,
        gap: Duration::from_millis(2),
    }
}

/// The lab's APs plus `kap`, a tunnel for the AP namespace's own address,
/// so keepalives sent from there are answered by address.
fn tunnels() -> String {
    format!(
        "{}[[tunnel]]\nap = \"kap\"\naddress = \"{AP_NS}\"\nvlan = 201\n",
        Lab::tunnels_toml()
    )
}

/// Whether a keepalive from the AP namespace is echoed within 500 ms.
fn keepalive_answered(lab: &Lab) -> bool {
    let ka = [
        0x00, 0x10, 0x00, 0x08, 0, 0, 0, 0, 0x00, 0x16, 0x00, 0x23, 0x00, 0x10, 1, 2, 3, 4, 5, 6,
        7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];
    let ac: SocketAddr = SocketAddr::new(AC.into(), 5247);
    lab.ap
        .enter(|| {
            let s = UdpSocket::bind(SocketAddr::new(AP_NS.into(), 0))?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.send_to(&ka, ac)?;
            let mut buf = [0u8; 128];
            Ok::<_, anyhow::Error>(s.recv_from(&mut buf).is_ok())
        })
        .unwrap()
}

#[test]
fn deleted_pins_are_pinned_again_and_forwarding_never_stops() {
    let lab = Lab::new("pin", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);
    let link = ferry::pins::link(&lab.pin_dir(), "fap0");
    let report = traffic().run(&lab, || {
        // What `rm -rf /sys/fs/bpf/ferry/<node>` does under a running node.
        ferry::pins::remove(&lab.pin_dir()).unwrap();
        lab.wait_for(3, "pins restored", || {
            link.exists()
                && abi::PINNED_MAPS
                    .iter()
                    .all(|m| lab.pin_dir().join(m).exists())
        });
    });
    report.assert_lossless("pins deleted under a running node");
    let a = lab.attachment("fap0");
    assert_eq!(a["state"], "attached", "{a}");
    assert!(a["repinned"].as_u64().unwrap() >= 1, "{a}");
    // The restored pins are the running ones: a restart adopts them.
    lab.kill9();
    lab.start();
    let st = lab.json(&["status"]);
    assert_eq!(st["adopted"], true, "{st}");
    assert_eq!(lab.json(&["stations"])["total"].as_u64(), Some(2));
    traffic()
        .run(&lab, || {})
        .assert_lossless("after the restart");
}

#[test]
fn a_detached_program_is_attached_again_and_a_foreign_one_stops_keepalives() {
    let lab = Lab::new("lnk", &tunnels());
    lab.start();
    assert!(keepalive_answered(&lab));
    let pin = ferry::pins::link(&lab.pin_dir(), "fap0");

    // Another tool detaches the link (`bpftool link detach`).
    LinkHandle::open_pinned(&pin).unwrap().detach().unwrap();
    lab.wait_for(3, "attached again", || {
        lab.attachment("fap0")["reattached"].as_u64() == Some(1)
    });
    assert_eq!(lab.attachment("fap0")["state"], "attached");
    assert!(keepalive_answered(&lab));
    learn_stations(&lab);
    traffic()
        .run(&lab, || {})
        .assert_lossless("after re-attaching");

    // Another program takes the interface while ferry is stopped (SIGSTOP
    // keeps the detach and the foreign attach from racing ferry's check).
    lab.signal(libc::SIGSTOP);
    LinkHandle::open_pinned(&pin).unwrap().detach().unwrap();
    let foreign = lab
        .ac
        .enter(|| {
            let mut p = Datapath::load()?;
            p.attach(abi::PROG_PASS, "fap0", XdpMode::Driver)?;
            Ok::<_, anyhow::Error>(p)
        })
        .unwrap();
    lab.signal(libc::SIGCONT);
    lab.wait_for(3, "detached", || {
        lab.attachment("fap0")["state"] == "detached"
    });
    let a = lab.attachment("fap0");
    assert!(
        a["detail"].as_str().unwrap().contains("not this node's"),
        "{a}"
    );
    assert!(
        !keepalive_answered(&lab),
        "no keepalive answered while fap0 runs another program"
    );
    let st = lab.json(&["status"]);
    assert!(
        st["keepalive"]["no_dataplane"].as_u64().unwrap() >= 1,
        "{st}"
    );
    assert_eq!(
        lab.metric("ferry_attached{iface=\"fap0\""),
        Some(0.0),
        "the metric says so too"
    );

    // The other program goes: ferry takes the interface back.
    drop(foreign);
    lab.wait_for(3, "attached after the foreign program left", || {
        lab.attachment("fap0")["state"] == "attached"
    });
    assert!(keepalive_answered(&lab));
    assert_eq!(lab.metric("ferry_attached{iface=\"fap0\""), Some(1.0));
    traffic()
        .run(&lab, || {})
        .assert_lossless("after taking the interface back");
}

#[test]
fn a_recreated_interface_is_attached_again_live_and_across_a_restart() {
    let mut lab = Lab::new("ifc", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);

    lab.delete_ap_link();
    lab.wait_for(3, "interface missing", || {
        lab.attachment("fap0")["state"] == "interface missing"
    });
    assert_eq!(lab.metric("ferry_attached{iface=\"fap0\""), Some(0.0));
    lab.recreate_ap_link();
    lab.wait_for(3, "attached to the new fap0", || {
        lab.attachment("fap0")["state"] == "attached"
    });
    let a = lab.attachment("fap0");
    assert_eq!(a["reattached"].as_u64(), Some(1), "{a}");
    assert_eq!(
        a["ifindex"].as_u64(),
        Some(u64::from(lab.ac.ifindex("fap0").unwrap())),
        "{a}"
    );
    traffic()
        .run(&lab, || {})
        .assert_lossless("both ways through the re-created interface");

    // Re-created while ferry is stopped: the pinned link is defunct; the
    // next start replaces it, no pin surgery by hand.
    assert!(lab.stop().success());
    lab.delete_ap_link();
    lab.recreate_ap_link();
    lab.start();
    assert_eq!(lab.attachment("fap0")["state"], "attached");
    assert!(
        lab.log().contains("defunct"),
        "the log says what was replaced"
    );
    traffic()
        .run(&lab, || {})
        .assert_lossless("after a restart over a re-created interface");
}

#[test]
fn ip_netns_exec_is_refused_with_the_nsenter_hint() {
    let lab = Lab::new("nsx", &Lab::tunnels_toml());
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", lab.ac.name(), env!("CARGO_BIN_EXE_ferry")])
        .args(lab.run_args(&[]));
    let out = bounded(cmd, 20);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("nsenter --net=/run/netns/{}", lab.ac.name())),
        "{err}"
    );
    assert!(!lab.pin_dir().exists(), "nothing pinned");
    let link = lab.ac.exec(&["ip", "link", "show", "fap0"]).unwrap();
    assert!(!link.contains("xdp"), "nothing attached: {link}");
}

#[test]
fn a_restart_without_a_trustworthy_state_file_adopts_what_runs() {
    let lab = Lab::new("adp", &Lab::tunnels_toml());
    lab.start();
    learn_stations(&lab);
    let state = lab.dir.join("state").join(format!("{}.json", lab.node));
    let xs = Lab::filler_toml("x", 10, 0);
    let b = lab.file("b.toml", &format!("{}{xs}", Lab::tunnels_toml()));
    lab.ferry(&["swap", b.to_str().unwrap()]);
    let describes_b = std::fs::read(&state).unwrap();
    // C adds five more; then the state file is put back to B's, as when a
    // swap is killed after its flip and before the file is written.
    let ys = Lab::filler_toml("y", 5, 100);
    let c = lab.file("c.toml", &format!("{}{xs}{ys}", Lab::tunnels_toml()));
    lab.ferry(&["swap", c.to_str().unwrap()]);
    lab.kill9();
    std::fs::write(&state, &describes_b).unwrap();

    lab.start();
    let aps = lab.aps();
    assert_eq!(aps.len(), 17, "C runs, as the maps say: {aps:?}");
    assert!(aps.contains(&"x9".to_string()), "names from the old file");
    assert_eq!(
        aps.iter().filter(|a| a.starts_with("adopted-")).count(),
        5,
        "C's new tunnels have no known name: {aps:?}"
    );
    assert!(lab.log().contains("older than what runs"), "{}", lab.log());
    assert_eq!(lab.json(&["stations"])["total"].as_u64(), Some(2));
    traffic()
        .run(&lab, || {})
        .assert_lossless("after adopting from the maps");

    // No state file at all: still what runs, not the file's two tunnels.
    lab.kill9();
    std::fs::remove_file(&state).unwrap();
    lab.start();
    let aps = lab.aps();
    assert_eq!(aps.len(), 17, "{aps:?}");
    assert!(
        aps.contains(&"ap1".to_string()),
        "named from the configuration by address"
    );
    assert!(lab.log().contains("no state file"), "{}", lab.log());
    traffic()
        .run(&lab, || {})
        .assert_lossless("after adopting without a state file");
    // The file's table is one command away.
    lab.ferry(&["reload", "--force"]);
    assert_eq!(lab.aps(), vec!["ap1".to_string(), "ap2".to_string()]);
}
