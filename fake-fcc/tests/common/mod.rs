//! Shared test helpers: a tiny CBOR writer (so malformed bundles can be built byte by byte),
//! in-test PKI (rcgen), and the by_tool bundle of docs/protocol.md §7.1 as editable parts.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

pub(crate) const ENDPOINT: &str = "0123456789abcdef0123456789abcdef";
pub(crate) const URI: &str =
    "coaps://bootstrap.example.com:5684?aid=016f1234567890abcdef000000000000";
pub(crate) const SID: &str = "fcu-session-0001";

/// A CBOR value for the test writer.
#[derive(Clone, Debug)]
pub(crate) enum V {
    U(u64),
    B(Vec<u8>),
    T(String),
    A(Vec<V>),
    AI(Vec<V>),
    M(Vec<(V, V)>),
    MI(Vec<(V, V)>),
    Tag(u64, Box<V>),
    Bool(bool),
    Raw(Vec<u8>),
}

pub(crate) fn t(s: &str) -> V {
    V::T(s.to_owned())
}
pub(crate) fn b(bytes: &[u8]) -> V {
    V::B(bytes.to_vec())
}
pub(crate) fn m(pairs: &[(&str, V)]) -> V {
    V::M(pairs.iter().map(|(k, v)| (t(k), v.clone())).collect())
}

fn head(major: u8, n: u64, out: &mut Vec<u8>) {
    let mt = major << 5;
    if n < 24 {
        out.push(mt | n as u8);
    } else if n <= 0xff {
        out.extend([mt | 24, n as u8]);
    } else if n <= 0xffff {
        out.push(mt | 25);
        out.extend((n as u16).to_be_bytes());
    } else if n <= 0xffff_ffff {
        out.push(mt | 26);
        out.extend((n as u32).to_be_bytes());
    } else {
        out.push(mt | 27);
        out.extend(n.to_be_bytes());
    }
}

pub(crate) fn enc(v: &V) -> Vec<u8> {
    let mut out = Vec::new();
    enc_into(v, &mut out);
    out
}

fn enc_into(v: &V, out: &mut Vec<u8>) {
    match v {
        V::U(n) => head(0, *n, out),
        V::B(bytes) => {
            head(2, bytes.len() as u64, out);
            out.extend(bytes);
        }
        V::T(s) => {
            head(3, s.len() as u64, out);
            out.extend(s.as_bytes());
        }
        V::A(items) => {
            head(4, items.len() as u64, out);
            items.iter().for_each(|i| enc_into(i, out));
        }
        V::AI(items) => {
            out.push(0x9f);
            items.iter().for_each(|i| enc_into(i, out));
            out.push(0xff);
        }
        V::M(pairs) => {
            head(5, pairs.len() as u64, out);
            for (k, v) in pairs {
                enc_into(k, out);
                enc_into(v, out);
            }
        }
        V::MI(pairs) => {
            out.push(0xbf);
            for (k, v) in pairs {
                enc_into(k, out);
                enc_into(v, out);
            }
            out.push(0xff);
        }
        V::Tag(tag, inner) => {
            head(6, *tag, out);
            enc_into(inner, out);
        }
        V::Bool(x) => out.push(if *x { 0xf5 } else { 0xf4 }),
        V::Raw(bytes) => out.extend(bytes),
    }
}

pub(crate) fn now() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp() as u64
}

/// A CA made in the test.
pub(crate) struct Ca {
    pub key: KeyPair,
    pub cert: rcgen::Certificate,
}

impl Ca {
    pub(crate) fn new(cn: &str) -> Ca {
        Ca::with_alg(cn, &PKCS_ECDSA_P256_SHA256)
    }

    pub(crate) fn with_alg(cn: &str, alg: &'static rcgen::SignatureAlgorithm) -> Ca {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365 * 30);
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    pub(crate) fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }
}

/// What kind of EKU a device certificate gets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Eku {
    ClientAuth,
    None,
    ServerAuthOnly,
    Any,
}

/// Issues a device certificate for `key` (any key implementing rcgen's PublicKeyData).
pub(crate) fn device_cert(
    ca: &Ca,
    key: &impl rcgen::PublicKeyData,
    cn: &str,
    eku: Eku,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Vec<u8> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.extended_key_usages = match eku {
        Eku::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Eku::None => vec![],
        Eku::ServerAuthOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Eku::Any => vec![ExtendedKeyUsagePurpose::Any],
    };
    params.not_before = not_before;
    params.not_after = not_after;
    params
        .signed_by(key, &ca.cert, &ca.key)
        .unwrap()
        .der()
        .to_vec()
}

/// The standard 20-year device certificate.
pub(crate) fn device_cert_20y(ca: &Ca, key: &KeyPair, cn: &str) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    device_cert(
        ca,
        key,
        cn,
        Eku::ClientAuth,
        now - Duration::days(1),
        now + Duration::days(365 * 20 + 5),
    )
}

pub(crate) fn new_key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

/// The bootstrap server CA of the fixtures, as DER.
pub(crate) fn bootstrap_ca_der() -> Vec<u8> {
    use der::{DecodePem, Encode};
    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/bootstrap/bootstrap_ca.pem"
    ))
    .unwrap();
    x509_cert::Certificate::from_pem(pem.as_bytes())
        .unwrap()
        .to_der()
        .unwrap()
}

/// Test PKI: a factory CA, a device key and its certificate, and the bootstrap CA.
pub(crate) struct Pki {
    pub ca: Ca,
    pub device_key: KeyPair,
    pub device_cert: Vec<u8>,
    pub bootstrap_ca: Vec<u8>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca = Ca::new("pep test factory CA");
        let device_key = new_key();
        let device_cert = device_cert_20y(&ca, &device_key, ENDPOINT);
        Pki {
            ca,
            device_key,
            device_cert,
            bootstrap_ca: bootstrap_ca_der(),
        }
    }

    pub(crate) fn device_key_der(&self) -> Vec<u8> {
        self.device_key.serialize_der()
    }
}

pub(crate) fn key_item(name: &str, der: &[u8]) -> V {
    m(&[
        ("Name", t(name)),
        ("Type", t("ECCPrivate")),
        ("Format", t("der")),
        ("Data", b(der)),
    ])
}

pub(crate) fn cert_item(name: &str, der: &[u8]) -> V {
    m(&[("Name", t(name)), ("Format", t("der")), ("Data", b(der))])
}

pub(crate) fn cfg(name: &str, data: V) -> V {
    m(&[("Name", t(name)), ("Data", data)])
}

/// The by_tool bundle of §7.1 as editable parts; `encode` writes the top map in this order:
/// SchemeVersion, SID, Keys, Certificates, CertificateChains, ConfigParams, then `extra`.
#[derive(Clone, Debug)]
pub(crate) struct Parts {
    pub scheme: Option<V>,
    pub sid: Option<V>,
    pub keys: Option<Vec<V>>,
    pub certs: Option<Vec<V>>,
    pub chains: Option<Vec<V>>,
    pub config: Vec<(String, V)>,
    pub extra: Vec<(V, V)>,
}

impl Parts {
    pub(crate) fn by_tool(pki: &Pki, with_time: bool) -> Parts {
        let mut config: Vec<(String, V)> = vec![
            ("mbed.UseBootstrap".into(), V::U(1)),
            ("mbed.EndpointName".into(), t(ENDPOINT)),
            ("mbed.BootstrapServerURI".into(), t(URI)),
            ("mbed.Manufacturer".into(), t("Acme")),
            ("mbed.ModelNumber".into(), t("M-1")),
            ("mbed.DeviceType".into(), t("sensor")),
            ("mbed.HardwareVersion".into(), t("1.0")),
            ("mbed.MemoryTotalKB".into(), V::U(512)),
            ("mbed.SerialNumber".into(), t("SN-0001")),
        ];
        if with_time {
            config.push(("mbed.CurrentTime".into(), V::U(now())));
            config.push(("mbed.Timezone".into(), t("Europe/London")));
            config.push(("mbed.UTCOffset".into(), t("+00:00")));
        }
        Parts {
            scheme: Some(t("0.0.1")),
            sid: Some(t(SID)),
            keys: Some(vec![key_item(
                "mbed.BootstrapDevicePrivateKey",
                &pki.device_key_der(),
            )]),
            certs: Some(vec![
                cert_item("mbed.BootstrapDeviceCert", &pki.device_cert),
                cert_item("mbed.BootstrapServerCACert", &pki.bootstrap_ca),
            ]),
            chains: None,
            config,
            extra: vec![],
        }
    }

    /// All optional items too (update cert, class and vendor id): zero warnings.
    pub(crate) fn complete(pki: &Pki) -> Parts {
        let mut p = Parts::by_tool(pki, true);
        p.certs
            .as_mut()
            .unwrap()
            .push(cert_item("mbed.UpdateAuthCert", &pki.ca.der()));
        p.set("mbed.ClassId", b(&[1; 16]));
        p.set("mbed.VendorId", b(&[2; 16]));
        p
    }

    /// Sets (or adds) a config param's Data.
    pub(crate) fn set(&mut self, name: &str, data: V) -> &mut Self {
        match self.config.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = data,
            None => self.config.push((name.to_owned(), data)),
        }
        self
    }

    pub(crate) fn remove(&mut self, name: &str) -> &mut Self {
        self.config.retain(|(n, _)| n != name);
        self
    }

    pub(crate) fn top(&mut self, key: &str, value: V) -> &mut Self {
        self.extra.push((t(key), value));
        self
    }

    pub(crate) fn pairs(&self) -> Vec<(V, V)> {
        let mut pairs = Vec::new();
        if let Some(s) = &self.scheme {
            pairs.push((t("SchemeVersion"), s.clone()));
        }
        if let Some(s) = &self.sid {
            pairs.push((t("SID"), s.clone()));
        }
        if let Some(k) = &self.keys {
            pairs.push((t("Keys"), V::A(k.clone())));
        }
        if let Some(c) = &self.certs {
            pairs.push((t("Certificates"), V::A(c.clone())));
        }
        if let Some(c) = &self.chains {
            pairs.push((t("CertificateChains"), V::A(c.clone())));
        }
        if !self.config.is_empty() {
            pairs.push((
                t("ConfigParams"),
                V::A(self.config.iter().map(|(n, d)| cfg(n, d.clone())).collect()),
            ));
        }
        pairs.extend(self.extra.iter().cloned());
        pairs
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        enc(&V::M(self.pairs()))
    }
}

use der::Decode;
use p256::ecdsa::signature::Verifier;

/// Checks the CSR's signature with p256, its subject CN and EKU clientAuth; returns the
/// SubjectPublicKeyInfo DER.
pub(crate) fn check_csr(der: &[u8], cn: &str) -> Vec<u8> {
    use der::Encode;
    let req = x509_cert::request::CertReq::from_der(der).expect("a DER PKCS#10 request");
    assert_eq!(req.algorithm.oid.to_string(), "1.2.840.10045.4.3.2");
    assert!(
        req.algorithm.parameters.is_some(),
        "the genuine explicit NULL parameter"
    );
    let spki = req.info.public_key.to_der().unwrap();
    let key = p256::PublicKey::from_sec1_bytes(req.info.public_key.subject_public_key.raw_bytes())
        .unwrap();
    let sig = p256::ecdsa::Signature::from_der(req.signature.raw_bytes()).unwrap();
    p256::ecdsa::VerifyingKey::from(&key)
        .verify(&req.info.to_der().unwrap(), &sig)
        .expect("CSR signature verifies");
    let subject = req.info.subject.to_string();
    assert_eq!(subject, format!("CN={cn}"));
    let attrs = req.info.attributes.to_der().unwrap();
    let client_auth = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
    assert!(
        attrs.windows(client_auth.len()).any(|w| w == client_auth),
        "EKU clientAuth requested"
    );
    spki
}
