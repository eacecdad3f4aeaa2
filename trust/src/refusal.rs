//! Why a TLS peer was refused, or refused us, in the words an operator reads in a step
//! log, a host's reason or an agent's log: built once by the verifiers, found again
//! wherever rustls, tokio or tonic wrapped it.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use rustls::CertificateError;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub(crate) String);

/// The error a verifier returns to rustls, carrying `message` to whoever reads it.
pub(crate) fn refused(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        Refusal(message),
    ))))
}

/// The plain words of `error`, or of anything it was caused by, when it is about TLS
/// trust: a certificate refused by this side or by the peer, or a peer without TLS.
pub fn refusal(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(refusal) = error.downcast_ref::<Refusal>() {
            return Some(refusal.0.clone());
        }
        if let Some(words) = error.downcast_ref::<rustls::Error>().and_then(rustls_words) {
            return Some(words);
        }
        if let Some(words) = error
            .downcast_ref::<io::Error>()
            .and_then(|e| e.get_ref())
            .and_then(|inner| refusal(inner))
        {
            return Some(words);
        }
        next = error.source();
    }
    None
}

/// `error` and every cause under it in one line: what a failed connection says, where
/// the outermost message alone ("transport error", "client error (Connect)") says nothing.
/// A cause whose words the line already holds is left out: many errors (sqlx's, std's
/// wrapped in a message) print their source themselves, and a reader wants it once.
pub fn causes(error: &(dyn StdError + 'static)) -> String {
    let mut words = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let said = cause.to_string();
        if !said.is_empty() && !words.contains(&said) {
            words.push_str(": ");
            words.push_str(&said);
        }
        next = cause.source();
    }
    words
}

fn rustls_words(error: &rustls::Error) -> Option<String> {
    use rustls::AlertDescription as Alert;
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<Refusal>().is_some() =>
        {
            other.0.downcast_ref::<Refusal>().map(|r| r.0.clone())
        }
        rustls::Error::AlertReceived(
            alert @ (Alert::BadCertificate
            | Alert::UnknownCA
            | Alert::CertificateExpired
            | Alert::CertificateRequired
            | Alert::CertificateUnknown
            | Alert::AccessDenied
            | Alert::DecryptError),
        ) => Some(format!(
            "the peer refused this side's certificate ({alert:?}): check that it was issued by \
             the CA the peer trusts, for this side's role and address, and has not expired"
        )),
        rustls::Error::InvalidMessage(_) => {
            Some("the peer does not speak TLS: is it running without --tls-cert?".to_string())
        }
        // What a server's own checks of a client certificate found (the controller's
        // checks of an agent are already sentences, above).
        rustls::Error::NoCertificatesPresented => {
            Some("the client presented no certificate".to_string())
        }
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => Some("the client's certificate was not issued by the CA this side trusts".to_string()),
        rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => Some("the client's certificate has expired".to_string()),
        rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => Some(
            "the client's certificate is not for client use (an agent's certificate?)".to_string(),
        ),
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            Some(format!("the client's certificate was refused: {}", other.0))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_name_every_error_down_the_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl StdError for Outer {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(io::Error::new(
            io::ErrorKind::TimedOut,
            "no connection in 3s",
        ));
        assert_eq!(
            causes(&outer),
            "client error (Connect): no connection in 3s"
        );
    }

    #[test]
    fn a_cause_the_message_already_names_is_not_repeated() {
        #[derive(Debug)]
        struct Reading(io::Error);
        impl std::fmt::Display for Reading {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading users.toml: {}", self.0)
            }
        }
        impl StdError for Reading {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let denied = Reading(io::Error::from_raw_os_error(13));
        assert_eq!(
            causes(&denied),
            "reading users.toml: Permission denied (os error 13)"
        );
    }
}
