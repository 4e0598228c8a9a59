use super::*;
use std::process::Command;

fn isoinfo(iso: &[u8], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.iso");
    std::fs::write(&path, iso).unwrap();
    let out = Command::new("isoinfo")
        .arg("-i")
        .arg(&path)
        .args(args)
        .output()
        .expect("isoinfo (package genisoimage) reads what we write");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn isoinfo_reads_the_joliet_names_and_contents() {
    let user = "#cloud-config\nhostname: agent-1\n".repeat(200);
    let iso = Seed::nocloud(&user, "instance-id: i-1\n", Some("version: 2\n"))
        .to_iso()
        .unwrap();
    let listing = isoinfo(&iso, &["-J", "-f"]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, ["/meta-data", "/network-config", "/user-data"]);
    assert_eq!(isoinfo(&iso, &["-J", "-x", "/user-data"]), user);
    assert_eq!(
        isoinfo(&iso, &["-J", "-x", "/meta-data"]),
        "instance-id: i-1\n"
    );
}

#[test]
fn the_volume_is_labelled_cidata_in_both_trees() {
    let iso = Seed::nocloud("", "", None).to_iso().unwrap();
    let primary = isoinfo(&iso, &["-d"]);
    assert!(primary.contains("Volume id: cidata"), "{primary}");
    assert!(primary.contains("Joliet with UCS level 3"), "{primary}");
    let joliet = isoinfo(&iso, &["-J", "-d"]);
    assert!(joliet.contains("Volume id: cidata"), "{joliet}");
}

#[test]
fn readers_without_joliet_see_unique_short_names() {
    let iso = Seed::new()
        .file("user-data", "a")
        .file("user-data-2", "b")
        .file("vendor.data.json", "c")
        .to_iso()
        .unwrap();
    let listing = isoinfo(&iso, &["-f"]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(names, ["/USERDAT1.;1", "/USERDATA.;1", "/VENDOR_D.JSO;1"]);
    assert_eq!(isoinfo(&iso, &["-x", "/USERDAT1.;1"]), "b");
}

#[test]
fn the_same_files_give_the_same_bytes() {
    let a = Seed::nocloud("x", "y", None).to_iso().unwrap();
    let b = Seed::nocloud("x", "y", None).to_iso().unwrap();
    let c = Seed::nocloud("x", "z", None).to_iso().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn bad_names_and_labels_are_refused_with_what_to_do() {
    let err = Seed::new().file("a/b", "").to_iso().unwrap_err();
    assert_eq!(err, SeedError::BadName("a/b".into()));
    assert!(err.to_string().contains("1 to 64 characters"));
    let err = Seed::new()
        .file("x", "")
        .file("x", "")
        .to_iso()
        .unwrap_err();
    assert_eq!(err, SeedError::Duplicate("x".into()));
    let err = Seed::new().label("my label").to_iso().unwrap_err();
    assert!(err.to_string().contains("ASCII letters"), "{err}");
    assert!(Seed::new().file(&"n".repeat(65), "").to_iso().is_err());
    assert!(Seed::new().file(&"n".repeat(64), "").to_iso().is_ok());
}
