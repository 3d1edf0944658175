//! The `fleet_in_process` example runs: ten in-process gateways, each driven by `FccClient`,
//! each answering once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;

#[test]
fn fleet_in_process_gets_ten_answers() {
    let example =
        workspace_bins::example("fake-fcc", "fleet_in_process", &["fake-fcc", "fcc-proto"]);
    let out = Command::new(example).output().expect("run the example");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{said}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // One "IP:PORT: STATUS" line per gateway, ten different gateways.
    let mut gateways = HashSet::new();
    for line in said.lines() {
        let (address, status) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("not ADDRESS: STATUS: {line:?}"));
        let address: SocketAddr = address.parse().expect("a gateway address");
        assert!(address.ip().is_loopback(), "{line}");
        // The bundle lacks the mandatory identity items: fake-fcc says so, like FCC.
        assert!(status.contains("(FCC_STATUS_ITEM_NOT_EXIST 25)"), "{line}");
        gateways.insert(address);
    }
    assert_eq!(said.lines().count(), 10, "{said}");
    assert_eq!(gateways.len(), 10, "{said}");
}
