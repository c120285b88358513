//! The plugin's logic compiled natively, with a host that sends over a lettre connection
//! or over flowmail's own SMTP transport.

use std::cell::RefCell;

use flowmail::caps::transport::Transport;
use flowmail::caps::transport::smtp::Relay;
use flowmail_plugin as native;
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;

/// The plugin's own logic, natively, sending over one connection.
pub struct NativeHost {
    rt: tokio::runtime::Runtime,
    via: Via,
}

enum Via {
    /// lettre's own transaction: each command waits for its reply.
    Lettre(RefCell<AsyncSmtpConnection>),
    /// flowmail's transport, with its session pool and pipelining.
    Flowmail(Relay),
}

impl native::host::Host for NativeHost {
    fn policy(
        &self,
        _: &str,
    ) -> Result<native::transport::AccountPolicy, native::types::MailError> {
        Ok(native::transport::AccountPolicy {
            default_sender: Some(native::types::Address {
                name: None,
                email: "bench@example.com".into(),
            }),
            required_sender: None,
            max_message_bytes: 1 << 20,
            max_attachment_bytes: 1 << 20,
        })
    }
    fn credential(
        &self,
        _: &str,
    ) -> Result<native::host::CredentialInfo, native::types::MailError> {
        Ok(native::host::CredentialInfo {
            kind: native::tokens::AuthKind::None,
            username: None,
            state: native::tokens::CredentialState::Ready,
        })
    }
    fn send(
        &self,
        _: &str,
        envelope: &native::transport::Envelope,
        message: &[u8],
    ) -> Result<native::transport::Delivery, native::types::MailError> {
        match &self.via {
            Via::Lettre(conn) => {
                let env = lettre::address::Envelope::new(
                    Some(envelope.sender.parse().unwrap()),
                    envelope
                        .recipients
                        .iter()
                        .map(|r| r.parse().unwrap())
                        .collect(),
                )
                .unwrap();
                self.rt
                    .block_on(conn.borrow_mut().send(&env, message))
                    .unwrap();
            }
            Via::Flowmail(relay) => {
                let env = flowmail::bindings::transport::Envelope {
                    sender: envelope.sender.clone(),
                    recipients: envelope.recipients.clone(),
                };
                self.rt.block_on(relay.send(&env, message)).unwrap();
            }
        }
        Ok(native::transport::Delivery {
            transport: "smtp".into(),
            status: native::transport::DeliveryStatus::Queued,
            accepted: envelope.recipients.clone(),
            reference: None,
        })
    }
    fn fetch_after(
        &self,
        _: &str,
        _: Option<&str>,
        _: u32,
        _: &native::mailbox::Search,
        _: Option<native::mailbox::SizeCap>,
    ) -> Result<native::mailbox::Batch, native::types::MailError> {
        unreachable!()
    }
    fn fetch(
        &self,
        _: &str,
        _: &str,
    ) -> Result<native::mailbox::RawMessage, native::types::MailError> {
        unreachable!()
    }
    fn warn(&self, _: &str) {}
    fn now(&self) -> i64 {
        1_800_000_000
    }
    fn random(&self) -> u128 {
        7
    }
}

/// The native twin's host: one lettre connection to `port`, its own runtime.
pub fn native_host(port: u16) -> NativeHost {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        AsyncSmtpConnection::connect_with_transport(
            Box::new(tcp),
            &ClientId::Domain("localhost".into()),
        )
        .await
        .unwrap()
    });
    NativeHost {
        rt,
        via: Via::Lettre(RefCell::new(conn)),
    }
}

/// The native twin's host over flowmail's SMTP transport `relay`, with a runtime of its
/// own like the lettre one's.
pub fn over_flowmail(relay: Relay) -> NativeHost {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    NativeHost {
        rt,
        via: Via::Flowmail(relay),
    }
}
