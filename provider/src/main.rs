fn main() {
    eprintln!("terraform-provider-libvirt: not built yet");
    std::process::exit(1);
}
