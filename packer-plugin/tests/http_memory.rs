//! The build's HTTP server sends a large file from `http_directory`
//! without holding it in memory: the most this test binary ever has
//! allocated at once stays far below the file's size.
//!
//! A binary of its own, because it counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use packer_plugin_libvirt::build::http;
use packer_plugin_libvirt::config::HttpConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The system allocator, keeping the number of bytes in use and its peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: ptr came from alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: u64 = 1024 * 1024;

#[tokio::test]
async fn a_200_mib_file_is_sent_with_a_few_mib_of_memory() {
    let dir = tempfile::tempdir().unwrap();
    let size = 200 * MIB;
    // Sparse: no disk space used, all of it read as zeros.
    std::fs::File::create(dir.path().join("disk.img"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = http::start(&HttpConfig {
        directory: Some(dir.path().to_path_buf()),
        content: BTreeMap::new(),
        ports: (free, free),
        bind: Some("127.0.0.1".into()),
    })
    .await
    .unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);

    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    c.write_all(b"GET /disk.img HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut received = 0u64;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = c.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        if head.len() < 64 {
            head.extend_from_slice(&buf[..n.min(64)]);
        }
        received += n as u64;
    }

    let peak = PEAK.load(Ordering::Relaxed) - before;
    println!(
        "{} MiB sent with at most {} KiB allocated at once",
        received / MIB,
        peak / 1024
    );
    assert!(head.starts_with(b"HTTP/1.0 200 OK"), "{head:?}");
    assert!(received > size, "{received} bytes received");
    assert!(
        peak < 16 * MIB as usize,
        "{} MiB allocated at the peak to send a {} MiB file",
        peak / MIB as usize,
        size / MIB
    );
}
