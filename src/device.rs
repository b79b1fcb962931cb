//! Devices and precisions as the user names them (`cpu`, `cuda:1`, `metal`; `f32`, `f16`, `bf16`,
//! `int8`).

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// A compute device by name, before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
    Metal,
}

impl DeviceSpec {
    /// Opens the device, or explains which cargo feature the build lacks.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => open_cuda(ordinal),
            DeviceSpec::Metal => open_metal(),
        }
    }

    /// The spec of an already-open device.
    pub fn of(device: &Device) -> Self {
        match device {
            Device::Cpu => DeviceSpec::Cpu,
            Device::Cuda(_) => match device.location() {
                candle_core::DeviceLocation::Cuda { gpu_id } => DeviceSpec::Cuda(gpu_id),
                _ => DeviceSpec::Cuda(0),
            },
            Device::Metal(_) => DeviceSpec::Metal,
        }
    }
}

fn missing_feature(feature: &str) -> Error {
    Error::Device(format!(
        "this kroute was built without the `{feature}` feature; rebuild with `cargo build --release --features {feature}`"
    ))
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| Error::Device(format!("cannot open CUDA device {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device> {
    Err(missing_feature("cuda"))
}

#[cfg(feature = "metal")]
fn open_metal() -> Result<Device> {
    Device::new_metal(0).map_err(|e| Error::Device(format!("cannot open the Metal device: {e}")))
}

#[cfg(not(feature = "metal"))]
fn open_metal() -> Result<Device> {
    Err(missing_feature("metal"))
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            "metal" | "mps" => Ok(DeviceSpec::Metal),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::Invalid(format!("bad CUDA ordinal in `{s}`: expected e.g. cuda:0"))
                }),
                None => Err(Error::Invalid(format!(
                    "unknown device `{s}`: expected cpu, cuda, cuda:N or metal"
                ))),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Metal => write!(f, "metal"),
        }
    }
}

/// What an encoder computes in (`--dtype`): one float dtype throughout, or int8 dense layers
/// (weights quantized at load, activations per row at run time; CPU only) with everything else
/// in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Float(DType),
    Int8,
}

impl Precision {
    /// The dtype of the activations and of every weight outside the dense layers.
    pub fn activations(self) -> DType {
        match self {
            Precision::Float(dtype) => dtype,
            Precision::Int8 => DType::F32,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Float(dtype) => dtype.as_str(),
            Precision::Int8 => "int8",
        }
    }

    /// The int8 kernel this CPU runs (`amx`, `avx512-vnni`, `avx-vnni`, `avx2`), for int8.
    pub fn int8_kernel(self) -> Option<&'static str> {
        match self {
            Precision::Int8 => crate::kernels::int8::Isa::detect().map(|isa| isa.as_str()),
            Precision::Float(_) => None,
        }
    }
}

impl From<DType> for Precision {
    fn from(dtype: DType) -> Self {
        Precision::Float(dtype)
    }
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        parse_dtype(s)
    }
}

/// Parses `f32`, `f16`, `bf16` or `int8`.
pub fn parse_dtype(s: &str) -> Result<Precision> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32.into()),
        "f16" | "float16" | "half" => Ok(DType::F16.into()),
        "bf16" | "bfloat16" => Ok(DType::BF16.into()),
        "int8" | "i8" => Ok(Precision::Int8),
        other => Err(Error::Invalid(format!(
            "unknown dtype `{other}`: expected f32, f16, bf16 or int8"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("CUDA".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        assert_eq!("metal".parse::<DeviceSpec>().unwrap(), DeviceSpec::Metal);
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_cuda_feature_says_how_to_rebuild() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("built without the `cuda` feature"), "{err}");
        assert!(
            err.contains("cargo build --release --features cuda"),
            "{err}"
        );
    }

    #[test]
    fn parses_dtypes() {
        assert_eq!(parse_dtype("f32").unwrap(), Precision::Float(DType::F32));
        assert_eq!(parse_dtype("BF16").unwrap(), Precision::Float(DType::BF16));
        assert_eq!(parse_dtype("int8").unwrap(), Precision::Int8);
        assert!(parse_dtype("f64").is_err());
    }
}
