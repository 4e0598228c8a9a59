fn main() {
    eprintln!("packer-plugin-libvirt: not built yet");
    std::process::exit(1);
}
