//! `terraform-provider-libvirt`: serves the provider of the
//! `terraform_provider_libvirt` library to Terraform.

fn main() -> anyhow::Result<()> {
    // A backtrace in a panic message would reach users as a diagnostic
    // full of addresses; Terraform shows the message alone just fine.
    std::env::remove_var("RUST_BACKTRACE");
    std::env::remove_var("RUST_LIB_BACKTRACE");
    // Ctrl-C reaches the whole process group. Terraform then asks the
    // provider to stop and waits for operations in flight; dying on the
    // signal instead would leave half-made volumes and domains behind
    // that no state knows about.
    // SAFETY: setting a signal to SIG_IGN before any thread exists.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(tfplugin::serve(
        "libvirt",
        terraform_provider_libvirt::LibvirtProvider::default(),
    ))?;
    Ok(())
}
