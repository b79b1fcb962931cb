//! Under the `cuda` feature, compiles `kernels/*.cu` to PTX with nvcc; `src/kernels/cuda.rs`
//! embeds it in the binary. Needs `nvcc` on PATH, and `CUDA_COMPUTE_CAP` (e.g. 90 for H100)
//! where no GPU is visible to `nvidia-smi`.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    compile_kernels();
}

#[cfg(feature = "cuda")]
fn compile_kernels() {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut kernels: Vec<_> = std::fs::read_dir("kernels")
        .expect("kernels/ beside Cargo.toml")
        .map(|entry| entry.expect("readable kernels/").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "cu"))
        .collect();
    kernels.sort();
    println!("cargo::rerun-if-changed=kernels");
    bindgen_cuda::Builder::default()
        .kernel_paths(kernels)
        .arg("-O3")
        .arg("-std=c++17")
        .build_ptx()
        .expect("nvcc compiles kernels/*.cu")
        .write(out_dir.join("kernels.rs"))
        .expect("writes the PTX bindings");
}
