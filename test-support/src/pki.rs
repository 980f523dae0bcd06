//! A test CA made with rcgen, and the certificates it issues: a server's (for the names given)
//! and a client's (for mutual TLS). For `https` (Kratos over HTTPS) and the TLS Redis servers.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A test CA, a server certificate and a client certificate it issued, all PEM.
#[derive(Debug)]
pub struct Pki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

/// A fresh CA, and certificates from it: the server's for `names` (DNS names or IP addresses).
pub fn pki(names: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tower-kratos test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, &ca_key);

    let issue = |names: Vec<String>, name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    };
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let (server_cert_pem, server_key_pem) =
        issue(names, "test server", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert_pem, client_key_pem) = issue(
        Vec::new(),
        "test client",
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca_pem: ca_cert.pem(),
        server_cert_pem,
        server_key_pem,
        client_cert_pem,
        client_key_pem,
    }
}
