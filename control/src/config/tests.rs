//! Configuration parsing and validation: positions, defaults, every
//! refusal, the fast path against TOML, and the state file's round trip.

use std::path::Path;

use super::*;

const GOOD: &str = r#"
[node]
name = "ac1"
addresses = ["198.18.0.1", "2001:2::1"]
[interfaces]
ap_side = "eth0"
client_side = "eth1"
[forwarding]
default_vlan = 200
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"
[[tunnel]]
ap = "ap2"
address = "198.18.1.11"
port = 12222
role = "backup"
vlan = 201
"#;

fn parse(t: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), t)
}

#[test]
fn good_config() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.name, "ac1");
    assert_eq!(c.data_port, 5247);
    assert_eq!(c.tunnels.len(), 2);
    assert_eq!(c.tunnels[0].vlan, 200);
    assert_eq!(c.tunnels[0].port, None);
    assert_eq!(c.tunnels[0].line, 10);
    assert_eq!(c.tunnels[1].state, TunnelState::Standby);
    assert_eq!(c.tunnels[1].port, Some(12222));
    assert!(!c.one_arm());
    let s = parse(&GOOD.replace("role = \"backup\"", "state = \"standby\"")).unwrap();
    assert_eq!(
        s.tunnels, c.tunnels,
        "state and the older role say the same"
    );
}

fn err(t: &str) -> String {
    parse(t).unwrap_err().to_string()
}

#[test]
fn errors_name_file_line_and_reason() {
    let e = err(&GOOD.replace("port = 12222", "port = 70000"));
    assert_eq!(
        e,
        "test.toml:16:8: tunnel port 70000 is out of range 1-65535"
    );
    let e = err(&GOOD.replace("\"198.18.1.11\"", "\"198.18.1.300\""));
    assert!(
        e.starts_with("test.toml:15:11: tunnel address \"198.18.1.300\" is not"),
        "{e}"
    );
    let e = err(&GOOD.replace("role = \"backup\"", "role = \"spare\""));
    assert!(
        e.starts_with("test.toml:17:8: tunnel state \"spare\" must be"),
        "{e}"
    );
    let e = err(&GOOD.replace("ap = \"ap2\"", "ap = \"ap1\""));
    assert!(
        e.contains(":14:") && e.contains("already defined at line 10"),
        "{e}"
    );
    let e = err(&GOOD.replace("default_vlan = 200", "default_vlan = 4095"));
    assert!(
        e.starts_with("test.toml:9:16: forwarding.default_vlan 4095"),
        "{e}"
    );
    let e = err(&GOOD.replace("client_side", "client_sid"));
    assert!(
        e.starts_with("test.toml:7:1: unknown field `client_sid`"),
        "{e}"
    );
    let e = err(&GOOD
        .replace("\"198.18.1.11\"", "\"198.18.1.10\"")
        .replace("port = 12222\n", ""));
    assert!(
        e.contains("another tunnel already uses 198.18.1.10 any port"),
        "{e}"
    );
    let e = err(&GOOD.replace("name = \"ac1\"", "name = \"../x\""));
    assert!(e.starts_with("test.toml:3:8: node name"), "{e}");
    let e = err(&GOOD.replace(
        "addresses = [\"198.18.0.1\", \"2001:2::1\"]",
        "addresses = []",
    ));
    assert!(e.contains("at least one address"), "{e}");
    let e = err(&GOOD.replace("ap_side = \"eth0\"", "ap_side = \"a-very-long-interface\""));
    assert!(e.starts_with("test.toml:6:11: interfaces.ap_side"), "{e}");
    let e = err("[node\nname=1");
    assert!(e.starts_with("test.toml:1:"), "{e}");
    let e = err(&GOOD.replace(
        "[interfaces]\nap_side = \"eth0\"\nclient_side = \"eth1\"\n",
        "",
    ));
    assert!(e.contains("missing field `interfaces`"), "{e}");
}

#[test]
fn duplicate_address_and_multicast_refused() {
    let e = err(&GOOD.replace("\"2001:2::1\"", "\"198.18.0.1\""));
    assert!(e.contains("listed twice"), "{e}");
    let e = err(&GOOD.replace("\"198.18.1.10\"", "\"224.0.0.1\""));
    assert!(e.contains("must be a unicast address"), "{e}");
}

#[test]
fn downstream_keys() {
    let text = format!(
        "{GOOD}[downstream]\ndscp = [0, 0, 0, 0, 0, 46, 46, 46]\ndf = false\nmtu = 1400\n\
         next_hop_mac = \"02:0e:00:00:00:01\"\nsource_mac = \"02:ac:00:00:00:01\"\n\
         [[station]]\nmac = \"02:5a:00:00:00:01\"\nap = \"ap2\"\nradio = 1\nbssid = \"02:bb:00:00:00:01\"\n"
    );
    let c = parse(&text.replace(
        "vlan = 201",
        "vlan = 201\nformat = \"802.11\"\nradio_mac = \"02:bb:00:00:00:02\"\nmtu = 1500",
    ))
    .unwrap();
    assert_eq!(c.dscp[5], 46);
    assert!(!c.df);
    assert_eq!(c.client_vlans, vec![200, 201]);
    let t = &c.tunnels[1];
    assert_eq!(t.format, Format::Dot11);
    assert_eq!(t.radio_mac, Some([2, 0xbb, 0, 0, 0, 2]));
    assert_eq!(t.next_hop_mac, Some([2, 0x0e, 0, 0, 0, 1]));
    assert_eq!(c.source_mac, Some([2, 0xac, 0, 0, 0, 1]));
    assert_eq!(t.mtu, 1500);
    assert_eq!(c.tunnels[0].mtu, 1400);
    assert_eq!(c.stations[0].tunnel, 1);
    assert_eq!(c.stations[0].radio, 1);
}

#[test]
fn downstream_errors() {
    let e = err(&GOOD.replace("vlan = 201", "vlan = 201\nformat = \"ethernet\""));
    assert!(e.contains("tunnel format \"ethernet\" must be"), "{e}");
    let e = err(&GOOD.replace("vlan = 201", "vlan = 201\nudp_lite = false"));
    assert!(e.contains("udp_lite applies to IPv6 tunnels only"), "{e}");
    let e = err(&GOOD.replace(
        "vlan = 201",
        "vlan = 201\nnext_hop_mac = \"02:00:00:00:00:01\"",
    ));
    assert!(e.contains("needs downstream.source_mac"), "{e}");
    let e = err(&GOOD.replace(
        "vlan = 201",
        "vlan = 201\nradio_mac = \"01:00:5e:00:00:01\"",
    ));
    assert!(e.contains("must be a unicast MAC"), "{e}");
    let e = err(&format!(
        "{GOOD}[[station]]\nmac = \"02:00:00:00:00:01\"\nap = \"ap9\"\n"
    ));
    assert!(e.contains("station ap \"ap9\" is not a [[tunnel]]"), "{e}");
    let e = err(&format!(
        "{GOOD}[[station]]\nmac = \"02:00:00:00:00:01\"\nap = \"ap1\"\nvlan = 201\n"
    ));
    assert!(e.contains("differs from tunnel \"ap1\"'s VLAN 200"), "{e}");
    let e = err(&GOOD.replace(
        "default_vlan = 200",
        "default_vlan = 200\nclient_vlans = [200]",
    ));
    // At the tunnel's `vlan` key, not its [[tunnel]] line.
    assert!(
        e.starts_with(
            "test.toml:19:1: tunnel \"ap2\" uses VLAN 201, which is not in forwarding.client_vlans"
        ),
        "{e}"
    );
    let e = err(&format!("{GOOD}[downstream]\ndscp = [1, 2]\n"));
    assert!(e.contains("downstream.dscp must list 8 values"), "{e}");
    let e = err(&GOOD
        .replace("\"198.18.1.10\"", "\"2001:2::10\"")
        .replace(", \"2001:2::1\"", ""));
    assert!(e.contains("has no IPv6 address"), "{e}");
}

const TABLE: &str = r#"
[[tunnel]]
ap = "ap1"
address = "198.18.1.10"   # a comment
vlan = 200

[[tunnel]]
ap = "nat"
session_id = "00112233445566778899aabbccddeeff"
role = "backup"
format = "802.11"
radio_mac = "02:aa:00:00:00:01"

[[tunnel]]
ap = "v6"
address = "2001:2::1:10"
udp_lite = false
mtu = 1400

[[station]]
mac = "02:bb:00:00:00:01"
ap = "ap1"
radio = 1
bssid = "02:cc:00:00:00:01"
"#;

#[test]
fn swap_tables_validate_against_the_config_and_round_trip() {
    let c = parse(GOOD).unwrap();
    let t = c.with_table(Path::new("t.toml"), TABLE).unwrap();
    assert_eq!(t.tunnels.len(), 3);
    assert_eq!(t.name, "ac1", "node settings come from the running config");
    assert_eq!(t.tunnels[1].address, None);
    assert_eq!(t.tunnels[1].session_id.unwrap()[15], 0xff);
    assert_eq!(t.client_vlans, vec![200], "derived client VLANs");
    // The state file's form gives the same table back.
    let again = c
        .with_entries(Path::new("state"), t.tunnel_entries(), t.station_entries())
        .unwrap();
    assert_eq!(again.tunnels.len(), 3);
    for (a, b) in again.tunnels.iter().zip(&t.tunnels) {
        assert_eq!(
            TunnelConfig {
                line: 0,
                vlan_line: 0,
                ..a.clone()
            },
            TunnelConfig {
                line: 0,
                vlan_line: 0,
                ..b.clone()
            }
        );
    }
    assert_eq!(again.stations, t.stations);
    // And is validated like a file: a bad entry is refused.
    let mut bad = t.tunnel_entries();
    bad[0].vlan = Some(5000);
    let e = c
        .with_entries(Path::new("state"), bad, Vec::new())
        .unwrap_err()
        .to_string();
    assert_eq!(e, "state:1:1: tunnel vlan 5000 is out of range 1-4094");
    // Errors point into the table file.
    let e = c
        .with_table(
            Path::new("t.toml"),
            &TABLE.replace("vlan = 200", "vlan = 5000"),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(e, "t.toml:5:8: tunnel vlan 5000 is out of range 1-4094");
    let e = c
        .with_table(Path::new("t.toml"), "[node]\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("t.toml:1:"), "{e}");
    for (bad, want) in [
        ("session_id = \"0011\"", "32 hex digits"),
        (
            "session_id = \"00112233445566778899aabbccddeeff\"\naddress = \"198.18.1.1\"",
            "not both",
        ),
        (
            "session_id = \"00112233445566778899aabbccddeeff\"\nport = 5",
            "takes its port from its first keepalive",
        ),
    ] {
        let text = TABLE.replace("session_id = \"00112233445566778899aabbccddeeff\"", bad);
        let e = c
            .with_table(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
    let e = c
        .with_table(Path::new("t.toml"), "[[tunnel]]\nap = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "t.toml:1:1: a tunnel needs an address or a session_id");
}

/// The scalar fast path and the TOML parser must read every entry the
/// same way, including the errors (the fast path declines, TOML words).
#[test]
fn fast_entry_path_agrees_with_toml() {
    let bodies = [
        "ap = \"a\"\naddress = \"198.18.1.1\"\nport = 5247\n",
        "ap = \"a\" # c\n\n# x\naddress=\"198.18.1.1\"\nudp_lite = false\nvlan = -1\n",
        "  ap = \"a b\"\n  mtu = +1400\n",
        "ap = \"a\"\nport = 05\n",
        "ap = \"a\"\nport = \"5\"\n",
        "ap = \"a\"\nbogus = 1\n",
        "ap = \"a\"\nap = \"b\"\n",
        "ap = \"a\\u0041\"\n",
        "ap = 'lit'\n",
        "address = \"198.18.1.1\"\n",
        "ap = \"a\"\nvlan = 1_000\n",
        "ap = \"a\" x\n",
        // Found by the config_fast fuzz target: control characters in a
        // comment, a bare CR, Unicode whitespace around a key.
        "ap = \"a\" # c\n\n# x!\0\0\0\naddress=\"198.18.1.1\"\n",
        "ap = \"a\"\r\nport = 5\r\n",
        "ap = \"a\"\rport = 5\n",
        "ap = \"a\"\r",
        "\u{a0}ap = \"a\"\n",
        "ap = \"a\"\t# tab\x7f\n",
    ];
    for b in bodies {
        fast::agrees_with_toml(b).unwrap();
    }
    assert!(
        fast::scalars(bodies[0])
            .and_then(<schema::RawTunnel as fast::FastEntry>::from_scalars)
            .is_some()
    );
    assert!(
        fast::scalars(bodies[1])
            .and_then(<schema::RawTunnel as fast::FastEntry>::from_scalars)
            .is_some()
    );
}

#[test]
fn entries_inside_multiline_strings_fall_back_to_one_parse() {
    // A line starting with "[[tunnel]]" inside a multi-line string is
    // not a header: the whole file is parsed as one document.
    let text =
        format!("{GOOD}\n[[tunnel]]\nap = \"\"\"x\n[[tunnel]]\"\"\"\naddress = \"198.18.1.30\"\n");
    // The name is refused (a newline), at the line of `ap`: a split at
    // the inner "[[tunnel]]" would have reported another place.
    let e = parse(&text).unwrap_err().to_string();
    let ap_line = GOOD.matches('\n').count() + 3;
    assert_eq!(
        e,
        format!("test.toml:{ap_line}:6: tunnel ap name must be 1-64 printable characters")
    );
}
