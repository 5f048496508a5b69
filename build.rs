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
    }
}
