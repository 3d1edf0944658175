//! Where the gateway's serial number comes from, and the check that it is a valid endpoint name.
// A parser of untrusted bytes: no index may panic (its unit tests may index).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::CliError;

/// The default location of the CPU information (Raspberry-Pi-class boards print `Serial` there).
pub const CPUINFO_PATH: &str = "/proc/cpuinfo";
/// The default location of the systemd machine ID.
pub const MACHINE_ID_PATH: &str = "/etc/machine-id";

/// A source of the serial number for `provision --serial-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialSource {
    /// The `Serial` line of `/proc/cpuinfo`.
    Cpuinfo,
    /// `/etc/machine-id`.
    MachineId,
    /// The first line of a file.
    File(PathBuf),
}

impl FromStr for SerialSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpuinfo" => Ok(Self::Cpuinfo),
            "machine-id" => Ok(Self::MachineId),
            other => match other.strip_prefix("file:") {
                Some("") => Err("file: needs a path, e.g. file:/etc/serial".to_owned()),
                Some(path) => Ok(Self::File(PathBuf::from(path))),
                None => Err(format!(
                    "unknown serial source {other:?}: expected cpuinfo, machine-id or file:PATH"
                )),
            },
        }
    }
}

impl SerialSource {
    /// A name for messages.
    pub fn name(&self) -> String {
        match self {
            Self::Cpuinfo => CPUINFO_PATH.to_owned(),
            Self::MachineId => MACHINE_ID_PATH.to_owned(),
            Self::File(p) => p.display().to_string(),
        }
    }

    /// Reads the serial number from this source (not yet validated).
    pub fn read(&self) -> Result<String, CliError> {
        let path: &Path = match self {
            Self::Cpuinfo => Path::new(CPUINFO_PATH),
            Self::MachineId => Path::new(MACHINE_ID_PATH),
            Self::File(p) => p,
        };
        let text = std::fs::read_to_string(path).map_err(|e| CliError::SerialSource {
            source_name: self.name(),
            reason: e.to_string(),
        })?;
        let parsed = match self {
            Self::Cpuinfo => serial_from_cpuinfo(&text),
            Self::MachineId | Self::File(_) => first_line(&text),
        };
        parsed.ok_or_else(|| CliError::SerialSource {
            source_name: self.name(),
            reason: match self {
                Self::Cpuinfo => "no non-empty `Serial` line".to_owned(),
                _ => "the file is empty".to_owned(),
            },
        })
    }
}

/// The value of the `Serial` line of `/proc/cpuinfo` text (`Serial\t\t: 00000000c0ffee42`).
pub fn serial_from_cpuinfo(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() == "Serial" {
            let value = value.trim();
            (!value.is_empty()).then(|| value.to_owned())
        } else {
            None
        }
    })
}

/// The first line of a file, trimmed; `None` if it is empty.
pub fn first_line(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.to_owned())
}

/// Checks that `serial` is a valid endpoint name (the certificate CN and FCC endpoint name), with
/// the rule of `pep_ca::EndpointName`: 1–64 characters of `a-z A-Z 0-9 ' ( ) + , - . ? : / =` and
/// space.
pub fn validate_serial(serial: &str) -> Result<String, CliError> {
    match pep_ca::EndpointName::new(serial) {
        Ok(name) => Ok(name.as_str().to_owned()),
        Err(pep_ca::CaError::InvalidEndpointName { reason, .. }) => Err(CliError::InvalidSerial {
            serial: crate::error::one_line(serial),
            reason,
        }),
        Err(other) => Err(CliError::InvalidSerial {
            serial: crate::error::one_line(serial),
            reason: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_serial_is_found() {
        let text = "processor\t: 0\nmodel name\t: ARMv7\n\nHardware\t: BCM2835\nRevision\t: a02082\nSerial\t\t: 00000000c0ffee42\nModel\t\t: Raspberry Pi 3\n";
        assert_eq!(
            serial_from_cpuinfo(text).as_deref(),
            Some("00000000c0ffee42")
        );
    }

    #[test]
    fn cpuinfo_without_serial_gives_none() {
        assert_eq!(serial_from_cpuinfo("processor\t: 0\nSerial\t:   \n"), None);
        assert_eq!(serial_from_cpuinfo("processor\t: 0\n"), None);
        // "Serial" must be the whole key, not a prefix.
        assert_eq!(serial_from_cpuinfo("Serial number: 12\n"), None);
    }

    #[test]
    fn first_line_is_trimmed() {
        assert_eq!(first_line("  abc123 \nrest\n").as_deref(), Some("abc123"));
        assert_eq!(first_line("\n"), None);
        assert_eq!(first_line(""), None);
    }

    #[test]
    fn sources_parse() {
        assert_eq!("cpuinfo".parse::<SerialSource>(), Ok(SerialSource::Cpuinfo));
        assert_eq!(
            "machine-id".parse::<SerialSource>(),
            Ok(SerialSource::MachineId)
        );
        assert_eq!(
            "file:/etc/serial".parse::<SerialSource>(),
            Ok(SerialSource::File("/etc/serial".into()))
        );
        assert!("file:".parse::<SerialSource>().is_err());
        assert!(
            "eeprom"
                .parse::<SerialSource>()
                .unwrap_err()
                .contains("eeprom")
        );
    }

    #[test]
    fn file_source_reads_first_line_and_reports_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial");
        std::fs::write(&path, "GW-0042\n").unwrap();
        assert_eq!(SerialSource::File(path.clone()).read().unwrap(), "GW-0042");
        std::fs::write(&path, "").unwrap();
        let err = SerialSource::File(path).read().unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = SerialSource::File(dir.path().join("missing"))
            .read()
            .unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn serial_rule() {
        assert!(validate_serial("GW-1").is_ok());
        assert!(validate_serial("a'b(c)+,-.?:/= Z9").is_ok());
        assert!(validate_serial(&"x".repeat(64)).is_ok());
        let err = validate_serial(&"x".repeat(65)).unwrap_err().to_string();
        assert!(err.contains("64"), "{err}");
        assert!(validate_serial("").is_err());
        let err = validate_serial("GW_1").unwrap_err().to_string();
        assert!(err.contains("'_'"), "{err}");
        assert!(validate_serial("GW&rm -rf").is_err());
        assert!(validate_serial("é").is_err());
    }
}
