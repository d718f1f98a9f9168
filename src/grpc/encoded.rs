//! Messages encoded once, sent many times. Every stream of an election is sent the same
//! change, so an Events message is encoded by the first stream that sends it and the others
//! send the same bytes; and a GetTerm on a big election whose state the replica holds (the
//! usual lease refresh) sends the bytes encoded for that state the first time.
//!
//! [`Encoded`] stands in for `EventsResponse` and `GetTermResponse` in the served service
//! (`build.rs` maps the types): tonic's codec asks it to encode itself, and it copies its
//! bytes.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// One message (an `EventsResponse` or a `GetTermResponse`), already encoded. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded(Bytes);

impl Encoded {
    /// Encodes `message`.
    pub fn new(message: &impl Message) -> Self {
        Self(Bytes::from(message.encode_to_vec()))
    }

    /// Bytes encoded earlier by [`Encoded::new`] or [`Encoded::bytes`].
    pub fn from_bytes(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The encoded message, taken out.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // only ever sent, never received: nothing decodes into it
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::atomix::primitive as pb;
    use crate::proto::atomix::primitive::election as epb;

    #[test]
    fn an_encoded_event_goes_out_as_the_message_it_was_made_from() {
        let message = epb::EventsResponse {
            header: Some(pb::ResponseHeader {
                response_type: pb::ResponseType::ResponseStream as i32,
            }),
            output: Some(epb::EventsOutput {
                r#type: epb::events_output::Type::Changed as i32,
                term: Some(epb::Term {
                    id: Some(pb::meta::Epoch { value: 7 }),
                    timestamp: None,
                    leader: "a".into(),
                    candidates: vec!["a".into(), "b\nc".into()],
                }),
            }),
        };
        let event = Encoded::new(&message);
        // what tonic's codec writes: the length it was told, then the message itself
        let mut wire = Vec::new();
        assert!(event.encode(&mut wire).is_ok());
        assert_eq!(wire.len(), event.encoded_len());
        assert_eq!(epb::EventsResponse::decode(&wire[..]).ok(), Some(message));
    }
}
