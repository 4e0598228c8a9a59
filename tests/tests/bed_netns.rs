//! The LAN of namespaces: hosts reach each other, and nothing is left after.

use testbed::netns::Lan;

#[test]
fn hosts_on_a_lan_reach_each_other_and_vanish_on_drop() {
    let names;
    {
        let mut lan = Lan::new().unwrap();
        let a = lan.attach("a", true).unwrap();
        let b = lan.attach("b", true).unwrap();
        let ping =
            a.ns.run(&["ping", "-c1", "-W2", &b.ip.to_string()])
                .unwrap();
        assert!(ping.contains("1 received"), "{ping}");
        names = [a.ns.name().to_string(), b.ns.name().to_string()];
    }
    let left =
        testbed::netns::run(std::process::Command::new("ip").args(["netns", "list"])).unwrap();
    for n in names {
        assert!(!left.contains(&n), "{n} still exists: {left}");
    }
}
