//! Points the graph's `com.microsoft` GroupQueryAttention nodes at nib's operator: the node's
//! domain string is overwritten in place with `nib.attention` (the same length, so no length
//! in the protobuf changes) and an opset import for that domain is appended to the model.
//! Only nodes whose attributes and inputs nib's kernel implements are changed.

use crate::engine::onnx_proto::{self, Fields, LEN};

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
    onnx_proto::opset_import(DOMAIN)
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
