//! Points the graph's `com.microsoft` GroupQueryAttention nodes at nib's operator: the node's
//! domain string is overwritten in place with `nib.attention` (the same length, so no length
//! in the protobuf changes) and an opset import for that domain is appended to the model.
//! Only nodes whose attributes and inputs nib's kernel implements are changed.

/// nib's operator domain; as long as `com.microsoft`, which it replaces byte for byte.
pub(crate) const DOMAIN: &str = "nib.attention";
const MICROSOFT: &str = "com.microsoft";
const OP_TYPE: &str = "GroupQueryAttention";

/// The attributes the kernel implements (any other leaves the node to ONNX Runtime).
const KNOWN_ATTRIBUTES: [&str; 7] =
    ["num_heads", "kv_num_heads", "scale", "softcap", "local_window_size", "do_rotary", "rotary_interleaved"];

/// Inputs the kernel reads: query, key, value, past key and value, seqlens_k,
/// total_sequence_length, cos and sin caches, position_ids (not attention_bias, head_sink).
const KNOWN_INPUTS: usize = 10;

/// `model` with its supported GroupQueryAttention nodes moved to `DOMAIN`, and how many were.
pub(crate) fn rewrite(model: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut bytes = model.to_vec();
    let mut domains = Vec::new();
    for field in Fields::new(model, 0) {
        let field = field?;
        if field.number == 7 && field.wire == LEN {
            for node in Fields::new(&model[..field.end], field.start) {
                let node = node?;
                if node.number == 1 && node.wire == LEN {
                    domains.extend(supported_node_domain(model, node.start, node.end)?);
                }
            }
        }
    }
    for &start in &domains {
        bytes[start..start + DOMAIN.len()].copy_from_slice(DOMAIN.as_bytes());
    }
    if !domains.is_empty() {
        bytes.extend(opset_import());
    }
    Ok((bytes, domains.len()))
}

/// Where the domain string of the node at `start..end` starts, when it is a GroupQueryAttention
/// the kernel implements.
fn supported_node_domain(model: &[u8], start: usize, end: usize) -> Result<Option<usize>, String> {
    let (mut op_type, mut domain, mut inputs, mut known) = (None, None, 0, true);
    for field in Fields::new(&model[..end], start) {
        let field = field?;
        let text = &model[field.start..field.end];
        match (field.number, field.wire) {
            (1, LEN) => inputs += 1,
            (4, LEN) => op_type = Some(text),
            (7, LEN) => domain = Some((field.start, text)),
            (5, LEN) => {
                let name = Fields::new(&model[..field.end], field.start)
                    .filter_map(Result::ok)
                    .find(|attribute| attribute.number == 1 && attribute.wire == LEN)
                    .map(|attribute| &model[attribute.start..attribute.end]);
                known &= name.is_some_and(|name| KNOWN_ATTRIBUTES.iter().any(|known| known.as_bytes() == name));
            }
            _ => {}
        }
    }
    Ok(match (op_type, domain) {
        (Some(op), Some((at, domain)))
            if op == OP_TYPE.as_bytes() && domain == MICROSOFT.as_bytes() && known && inputs <= KNOWN_INPUTS =>
        {
            Some(at)
        }
        _ => None,
    })
}

/// ModelProto field 8 (opset_import): `{ domain: DOMAIN, version: 1 }`.
fn opset_import() -> Vec<u8> {
    let mut entry = vec![0x0a, DOMAIN.len() as u8];
    entry.extend_from_slice(DOMAIN.as_bytes());
    entry.extend_from_slice(&[0x10, 0x01]);
    let mut field = vec![(8 << 3) | LEN, entry.len() as u8];
    field.extend(entry);
    field
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// One field of a protobuf message; for a length-delimited one, its payload is `start..end`.
struct Field {
    number: u64,
    wire: u8,
    start: usize,
    end: usize,
}

/// The fields of the message in `bytes[at..]`.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8], at: usize) -> Self {
        Fields { bytes, at, failed: false }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or("the model file ends inside a number")?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number in the model file is too long".into())
    }

    fn field(&mut self) -> Result<Field, String> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        let start = self.at;
        let end = match wire {
            VARINT => {
                self.varint()?;
                self.at
            }
            FIXED64 => start + 8,
            FIXED32 => start + 4,
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| "a length in the model file is too large")?;
                let payload = self.at;
                self.at = payload.checked_add(len).ok_or("a length in the model file is too large")?;
                return self.checked(Field { number, wire, start: payload, end: self.at });
            }
            other => return Err(format!("the model file has a field of unknown wire type {other}")),
        };
        self.at = end;
        self.checked(Field { number, wire, start, end })
    }

    fn checked(&self, field: Field) -> Result<Field, String> {
        if field.end > self.bytes.len() {
            return Err("the model file ends inside a field".into());
        }
        Ok(field)
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.bytes.len() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(number: u8, text: &str) -> Vec<u8> {
        let mut field = vec![(number << 3) | LEN, text.len() as u8];
        field.extend_from_slice(text.as_bytes());
        field
    }

    fn message(number: u8, body: &[u8]) -> Vec<u8> {
        let mut field = vec![(number << 3) | LEN];
        let mut len = body.len();
        while len >= 0x80 {
            field.push((len & 0x7f) as u8 | 0x80);
            len >>= 7;
        }
        field.push(len as u8);
        field.extend_from_slice(body);
        field
    }

    fn node(op: &str, domain: &str, attribute: &str) -> Vec<u8> {
        let mut body = [string(1, "qkv"), string(1, ""), string(2, "out"), string(4, op)].concat();
        body.extend(message(5, &[string(1, attribute), vec![0x18, 9]].concat()));
        body.extend(string(7, domain));
        message(1, &body)
    }

    #[test]
    fn moves_only_supported_group_query_attention_nodes() {
        let graph = [
            node("GroupQueryAttention", MICROSOFT, "num_heads"),
            node("MatMulNBits", MICROSOFT, "bits"),
            node("GroupQueryAttention", MICROSOFT, "smooth_softmax"),
        ]
        .concat();
        let model =
            [vec![0x08, 10], message(7, &graph), message(8, &[string(1, MICROSOFT), vec![0x10, 1]].concat())].concat();
        let (rewritten, moved) = rewrite(&model).unwrap();
        assert_eq!(moved, 1);
        let text = String::from_utf8_lossy(&rewritten);
        assert_eq!(text.matches(DOMAIN).count(), 2, "one node and the opset import");
        assert_eq!(text.matches(MICROSOFT).count(), 3, "the other nodes and the original import stay");
        assert_eq!(rewritten.len(), model.len() + opset_import().len());
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let model = message(7, &node("GroupQueryAttention", MICROSOFT, "num_heads"));
        for cut in 1..model.len() {
            let _ = rewrite(&model[..cut]);
        }
        assert!(rewrite(&model[..model.len() - 3]).is_err());
    }
}
