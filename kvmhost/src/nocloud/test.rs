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
    for bad in ["a//b", "/a", "a/", "a/../b", "a;1", &["d"; 9].join("/")] {
        let err = Seed::new().file(bad, "").to_iso().unwrap_err();
        assert_eq!(err, SeedError::BadName(bad.into()));
        assert!(err.to_string().contains("1 to 64 characters"), "{err}");
    }
    let err = Seed::new()
        .file("openstack", "")
        .file("openstack/latest/user_data", "")
        .to_iso()
        .unwrap_err();
    assert_eq!(err, SeedError::FileIsFolder("openstack".into()));
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

#[test]
fn our_own_image_reads_back_to_the_same_files_and_label() {
    let user = "#cloud-config\nhostname: agent-1\n".repeat(200);
    let seed = Seed::nocloud(&user, "instance-id: i-1\n", Some("version: 2\n"));
    let back = Seed::from_iso(&seed.to_iso().unwrap()).unwrap();
    assert_eq!(back.volume_label(), "cidata");
    let mut names: Vec<&str> = back.files().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["meta-data", "network-config", "user-data"]);
    assert_eq!(back.get("user-data"), Some(user.as_bytes()));
    assert_eq!(back.get("meta-data"), Some(&b"instance-id: i-1\n"[..]));
    assert_eq!(back.get("network-config"), Some(&b"version: 2\n"[..]));

    let empty = Seed::new().label("config-2").file("empty", "");
    let back = Seed::from_iso(&empty.to_iso().unwrap()).unwrap();
    assert_eq!(back, empty);
}

/// Writes `files` into a folder and makes an image with `genisoimage args`.
fn genisoimage(files: &[(&str, &str)], args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (name, contents) in files {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
    let iso = dir.path().join("seed.iso");
    let out = Command::new("genisoimage")
        .arg("-quiet")
        .args(args)
        .arg("-o")
        .arg(&iso)
        .arg(&src)
        .output()
        .expect("genisoimage is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(iso).unwrap()
}

#[test]
fn images_made_by_genisoimage_are_read_from_the_joliet_tree() {
    let user = "#cloud-config\npackages: [git]\n".repeat(300);
    let files = [
        ("user-data", user.as_str()),
        ("meta-data", "instance-id: web-1\nlocal-hostname: web\n"),
        ("network-config", "version: 2\nethernets: {}\n"),
    ];
    let seed = Seed::from_iso(&genisoimage(&files, &["-J", "-r", "-V", "cidata"])).unwrap();
    assert_eq!(seed.volume_label(), "cidata");
    for (name, contents) in files {
        assert_eq!(seed.get(name), Some(contents.as_bytes()), "{name}");
    }
    assert_eq!(seed.files().count(), 3);
}

#[test]
fn without_joliet_the_rock_ridge_names_are_read() {
    let files = [("user-data", "#cloud-config\n"), ("meta-data", "a: b\n")];
    let seed = Seed::from_iso(&genisoimage(&files, &["-r", "-V", "cidata"])).unwrap();
    assert_eq!(seed.get("user-data"), Some(&b"#cloud-config\n"[..]));
    assert_eq!(seed.get("meta-data"), Some(&b"a: b\n"[..]));
}

#[test]
fn without_joliet_or_rock_ridge_the_primary_names_are_read() {
    let files = [("user-data", "u"), ("meta-data", "m")];
    let seed = Seed::from_iso(&genisoimage(&files, &["-V", "cidata"])).unwrap();
    let mut names: Vec<&str> = seed.files().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, ["META_DAT", "USER_DAT"]);
    assert_eq!(seed.get("USER_DAT"), Some(&b"u"[..]));
}

#[test]
fn other_bytes_are_refused_with_an_error_not_a_panic() {
    let err = Seed::from_iso(b"#cloud-config\n").unwrap_err();
    assert!(matches!(err, SeedError::NotIso(_)), "{err}");
    assert!(err.to_string().contains("genisoimage"), "{err}");
    let err = Seed::from_iso(&vec![0u8; 64 * 1024]).unwrap_err();
    assert!(matches!(err, SeedError::NotIso(_)), "{err}");

    let iso = Seed::nocloud("#cloud-config\n", "instance-id: a\n", None)
        .to_iso()
        .unwrap();
    // Every truncation: an error or a seed, never a panic; cut before
    // the file data it must be an error.
    for cut in (0..iso.len()).step_by(97) {
        let r = Seed::from_iso(&iso[..cut]);
        if cut < FIRST_FILE * SECTOR {
            assert!(r.is_err(), "cut at {cut}");
        }
    }
    // Pseudo-random damage to the descriptors and directories.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut bad = iso.clone();
        for _ in 0..8 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = PVD * SECTOR + (state as usize) % ((FIRST_FILE - PVD) * SECTOR);
            bad[at] = (state >> 32) as u8;
        }
        let _ = Seed::from_iso(&bad);
    }
    let mut bad = iso.clone();
    // Root directory extent far past the end.
    bad[PVD * SECTOR + 156 + 2..PVD * SECTOR + 156 + 6].copy_from_slice(&u32::MAX.to_le_bytes());
    bad[SVD * SECTOR + 156 + 2..SVD * SECTOR + 156 + 6].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = Seed::from_iso(&bad).unwrap_err();
    assert!(matches!(err, SeedError::Damaged(_)), "{err}");
}

#[test]
fn a_directory_larger_than_a_sector_is_written_and_read_back() {
    // 120 long names need several sectors in both trees.
    let mut seed = Seed::new();
    for i in 0..120 {
        seed = seed.file(
            &format!("provisioning-script-number-{i:03}.sh"),
            format!("echo {i}\n"),
        );
    }
    let iso = seed.to_iso().unwrap();
    let listing = isoinfo(&iso, &["-J", "-f"]);
    assert_eq!(listing.lines().count(), 120, "{listing}");
    assert_eq!(
        isoinfo(&iso, &["-J", "-x", "/provisioning-script-number-077.sh"]),
        "echo 77\n"
    );
    assert_eq!(isoinfo(&iso, &["-f"]).lines().count(), 120);
    let back = Seed::from_iso(&iso).unwrap();
    assert_eq!(back.files().count(), 120);
    assert_eq!(
        back.get("provisioning-script-number-119.sh"),
        Some(&b"echo 119\n"[..])
    );
}

#[test]
fn records_that_repeat_one_extent_are_refused_instead_of_copied_again_and_again() {
    // One 1 MiB file and 60 empty ones, then every Joliet record made to
    // point at the big file: a reader without a bound would copy 61 MiB.
    let mut seed = Seed::new().file("big", vec![b'x'; 1 << 20]);
    for i in 0..60 {
        seed = seed.file(&format!("f{i:02}"), "");
    }
    let mut iso = seed.to_iso().unwrap();
    let jroot = u32::from_le_bytes(
        iso[SVD * SECTOR + 158..SVD * SECTOR + 162]
            .try_into()
            .unwrap(),
    );
    let dir = jroot as usize * SECTOR;
    let mut at = dir;
    let mut big = None;
    while iso[at] != 0 {
        let len = iso[at] as usize;
        if iso[at + 32] == 6 {
            // "big" in UCS-2 is 6 bytes; the `f..` names are 6 too, so
            // take the first file record, which sorts first.
            big.get_or_insert_with(|| iso[at + 2..at + 18].to_vec());
            let b = big.clone().unwrap();
            iso[at + 2..at + 18].copy_from_slice(&b);
        }
        at += len;
    }
    let err = Seed::from_iso(&iso).unwrap_err();
    assert!(matches!(err, SeedError::Damaged(_)), "{err}");
    assert!(
        err.to_string().contains("more bytes than the image"),
        "{err}"
    );
}

/// An OpenStack config drive as cloudbase-init and cloud-init read it.
fn config_drive() -> Seed {
    Seed::new()
        .label("config-2")
        .file("openstack/latest/meta_data.json", "{\"uuid\": \"win-1\"}")
        .file("openstack/latest/user_data", "#ps1\nhostname win-1\n")
        .file("openstack/2012-08-10/meta_data.json", "{}")
        .file("readme", "top level\n")
}

#[test]
fn isoinfo_reads_files_in_folders_from_both_trees() {
    let iso = config_drive().to_iso().unwrap();
    let listing = isoinfo(&iso, &["-J", "-f"]);
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "/openstack",
            "/openstack/2012-08-10",
            "/openstack/2012-08-10/meta_data.json",
            "/openstack/latest",
            "/openstack/latest/meta_data.json",
            "/openstack/latest/user_data",
            "/readme",
        ]
    );
    assert_eq!(
        isoinfo(&iso, &["-J", "-x", "/openstack/latest/user_data"]),
        "#ps1\nhostname win-1\n"
    );
    // Readers without Joliet walk the primary tree's 8.3 names.
    let primary = isoinfo(&iso, &["-f"]);
    assert!(
        primary.contains("/OPENSTAC/LATEST/META_DAT.JSO;1"),
        "{primary}"
    );
    assert_eq!(
        isoinfo(&iso, &["-x", "/OPENSTAC/LATEST/USER_DAT.;1"]),
        "#ps1\nhostname win-1\n"
    );
}

#[test]
fn files_in_folders_read_back_by_their_paths() {
    let seed = config_drive();
    let back = Seed::from_iso(&seed.to_iso().unwrap()).unwrap();
    assert_eq!(back.volume_label(), "config-2");
    let mut want: Vec<(&str, &[u8])> = seed.files().collect();
    let mut got: Vec<(&str, &[u8])> = back.files().collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
}

#[test]
fn folders_made_by_genisoimage_are_read_in_both_trees() {
    let files = [
        ("openstack/latest/meta_data.json", "{}"),
        ("openstack/latest/user_data", "#cloud-config\n"),
        ("user-data", "#cloud-config\n"),
    ];
    for args in [
        &["-J", "-r", "-V", "config-2"][..],
        &["-r", "-V", "config-2"][..],
    ] {
        let seed = Seed::from_iso(&genisoimage(&files, args)).unwrap();
        for (name, contents) in files {
            assert_eq!(
                seed.get(name),
                Some(contents.as_bytes()),
                "{name} with {args:?}"
            );
        }
        assert_eq!(seed.files().count(), 3);
    }
}

#[test]
fn a_folder_that_holds_itself_is_walked_no_deeper_than_iso_9660_allows() {
    let mut iso = config_drive().to_iso().unwrap();
    let le32 = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let root_record = SVD * SECTOR + 156;
    let (root, root_len) = (
        le32(&iso[root_record + 2..]),
        le32(&iso[root_record + 10..]),
    );
    // Point the Joliet root's `openstack` at the root itself.
    let mut at = root * SECTOR;
    let target = ucs2("openstack");
    loop {
        let len = iso[at] as usize;
        assert!(len > 0, "no openstack record in the Joliet root");
        if iso[at + 33..at + 33 + iso[at + 32] as usize] == target[..] {
            both32(&mut iso[at + 2..at + 10], root as u32);
            both32(&mut iso[at + 10..at + 18], root_len as u32);
            break;
        }
        at += len;
    }
    match Seed::from_iso(&iso) {
        Ok(seed) => assert!(
            seed.files().all(|(n, _)| n.split('/').count() <= MAX_DEPTH),
            "{:?}",
            seed.files().map(|f| f.0).collect::<Vec<_>>()
        ),
        Err(e) => assert!(matches!(e, SeedError::Damaged(_)), "{e}"),
    }
}
