//! Link settings for the `gatehouse` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed as bitmaps (DT_RELR, glibc 2.36 and
        // binutils 2.38 on): the position-independent binary's ~850 KB
        // table of relocations, which the loader reads whole at every
        // start, shrinks to a few KB (docs/benchmarks.md, "What idle memory is
        // made of, and packed relocations").
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        // The functions that start the service and serve its requests, laid
        // out together at the front of its code, so that the kernel maps in
        // the code that runs and not the code beside it: about 4.5 MiB less
        // resident when idle (docs/benchmarks.md, "Hot code first").
        // Written by scripts/hot-code for LLD, the toolchain's own linker
        // on x86-64 Linux; without it the layout is the linker's own.
        let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let hot = std::path::Path::new(&root).join("link/hot-text.ld");
        println!("cargo:rerun-if-changed={}", hot.display());
        if arch == "x86_64" && hot.exists() {
            // `-T` and its path as two arguments: a path may hold commas.
            println!("cargo:rustc-link-arg-bins=-T");
            println!("cargo:rustc-link-arg-bins={}", hot.display());
        }
    }
}
