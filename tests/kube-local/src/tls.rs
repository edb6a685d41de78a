//! TLS on the same port as plain HTTP: a CA and a serving certificate for 127.0.0.1 made at start.
//! kubectl (client-go) sends bearer tokens only over TLS, so a kubeconfig that should act as a
//! particular token (a ServiceAccount's, under RBAC) uses `https://` and this CA.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

/// The first byte of a TLS handshake record; plain HTTP starts with a method name.
pub const HANDSHAKE: u8 = 0x16;

pub struct Tls {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

pub fn make() -> Result<Tls, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let ca_key = KeyPair::generate().map_err(|e| err(&e))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kube-local CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| err(&e))?;
    let key = KeyPair::generate().map_err(|e| err(&e))?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(|e| err(&e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-local");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(|e| err(&e))?;
    let chain = vec![cert.der().clone(), ca.der().clone()];
    let private = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| err(&e))?;
    // HTTP/1.1 only (hyper is set up for it); Go clients fall back from h2 on their own.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
