//! Points the graph's `com.microsoft` GroupQueryAttention nodes at nib's operator: the node's
//! domain string is overwritten in place with `nib.attention` (the same length, so no length
//! in the protobuf changes) and an opset import for that domain is appended to the model.
//! nib's kernel keeps the KV cache in bf16, so the past inputs and present outputs those nodes
//! read and write become bfloat16 in the graph's signature (the element type is a one-byte
//! varint either way, overwritten in place too); the session reads that type back and
//! allocates the cache to match. All nodes move or none does: a graph whose KV is not plain
//! graph inputs and outputs of these nodes, or that has a node the kernel does not implement,
//! stays as it is (fp32 KV, ONNX Runtime's kernel).

use crate::engine::onnx_proto::{self, Field, Fields, LEN, VARINT};

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

/// ONNX `TensorProto.DataType`: FLOAT and BFLOAT16.
const FLOAT: u8 = 1;
const BFLOAT16: u8 = 16;

/// `model` with its GroupQueryAttention nodes moved to `DOMAIN` and their KV made bfloat16,
/// and how many nodes moved (0: the model as it is).
pub(crate) fn rewrite(model: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut graph = None;
    for field in Fields::new(model, 0) {
        let field = field?;
        if field.number == 7 && field.wire == LEN {
            graph = Some(field);
        }
    }
    let Some(graph) = graph else {
        return Ok((model.to_vec(), 0));
    };
    let in_graph = || Fields::new(&model[..graph.end], graph.start);
    let (mut nodes, mut consumed) = (Vec::new(), Vec::new());
    for field in in_graph() {
        let field = field?;
        if field.number == 1 && field.wire == LEN {
            let node = Node::read(model, &field)?;
            consumed.extend(node.inputs.iter().copied().filter(|name| !name.is_empty()));
            if node.is_attention() {
                nodes.push(node);
            }
        }
    }
    if nodes.is_empty() || nodes.iter().any(|node| !node.supported()) {
        return Ok((model.to_vec(), 0));
    }
    let mut bytes = model.to_vec();
    for node in &nodes {
        bytes[node.domain_at..node.domain_at + DOMAIN.len()].copy_from_slice(DOMAIN.as_bytes());
    }
    for at in kv_element_types(model, &graph, &nodes, &consumed)? {
        bytes[at] = BFLOAT16;
    }
    bytes.extend(opset_import());
    Ok((bytes, nodes.len()))
}

/// Where the element types of the nodes' past inputs and present outputs are written in the
/// graph's inputs, outputs and value infos: each past must be a float graph input read by its
/// node only, each present a float graph output no node reads.
fn kv_element_types(model: &[u8], graph: &Field, nodes: &[Node<'_>], consumed: &[&[u8]]) -> Result<Vec<usize>, String> {
    let mut kv: Vec<(&[u8], bool)> = Vec::new();
    for node in nodes {
        for index in [3, 4] {
            kv.push((node.inputs.get(index).copied().unwrap_or_default(), true));
        }
        for index in [1, 2] {
            kv.push((node.outputs.get(index).copied().unwrap_or_default(), false));
        }
    }
    let mut found = vec![false; kv.len()];
    let mut types = Vec::new();
    for field in Fields::new(&model[..graph.end], graph.start) {
        let field = field?;
        if field.wire != LEN || !(11..=13).contains(&field.number) {
            continue;
        }
        let (name, element_type) = value_info(model, &field)?;
        for (index, (kv_name, past)) in kv.iter().enumerate() {
            if *kv_name != name {
                continue;
            }
            let at = element_type
                .filter(|&at| model[at] == FLOAT)
                .ok_or_else(|| format!("the KV tensor {} is not float32", String::from_utf8_lossy(name)))?;
            types.push(at);
            found[index] |= field.number == if *past { 11 } else { 12 };
        }
    }
    for ((name, past), found) in kv.iter().zip(found) {
        let reads = consumed.iter().filter(|consumed| *consumed == name).count();
        if name.is_empty() || !found || reads != usize::from(*past) {
            return Err(format!(
                "the attention's KV tensor `{}` is not a graph {} of its node only",
                String::from_utf8_lossy(name),
                if *past { "input" } else { "output" }
            ));
        }
    }
    Ok(types)
}

/// A ValueInfoProto's name and, for a tensor type, where its element type's varint is.
fn value_info<'a>(model: &'a [u8], field: &Field) -> Result<(&'a [u8], Option<usize>), String> {
    let (mut name, mut element_type) = (&model[..0], None);
    for part in Fields::new(&model[..field.end], field.start) {
        let part = part?;
        match (part.number, part.wire) {
            (1, LEN) => name = &model[part.start..part.end],
            (2, LEN) => {
                let tensor = Fields::new(&model[..part.end], part.start)
                    .filter_map(Result::ok)
                    .find(|t| t.number == 1 && t.wire == LEN);
                element_type = tensor.and_then(|tensor| {
                    Fields::new(&model[..tensor.end], tensor.start)
                        .filter_map(Result::ok)
                        .find(|element| {
                            element.number == 1 && element.wire == VARINT && element.end == element.start + 1
                        })
                        .map(|element| element.start)
                });
            }
            _ => {}
        }
    }
    Ok((name, element_type))
}

/// The parts of a NodeProto the rewrite reads.
struct Node<'a> {
    op_type: &'a [u8],
    domain: &'a [u8],
    domain_at: usize,
    inputs: Vec<&'a [u8]>,
    outputs: Vec<&'a [u8]>,
    known_attributes: bool,
}

impl<'a> Node<'a> {
    fn read(model: &'a [u8], node: &Field) -> Result<Self, String> {
        let mut read = Node {
            op_type: &[],
            domain: &[],
            domain_at: 0,
            inputs: Vec::new(),
            outputs: Vec::new(),
            known_attributes: true,
        };
        for field in Fields::new(&model[..node.end], node.start) {
            let field = field?;
            let text = &model[field.start..field.end];
            match (field.number, field.wire) {
                (1, LEN) => read.inputs.push(text),
                (2, LEN) => read.outputs.push(text),
                (4, LEN) => read.op_type = text,
                (7, LEN) => (read.domain_at, read.domain) = (field.start, text),
                (5, LEN) => {
                    let name = Fields::new(&model[..field.end], field.start)
                        .filter_map(Result::ok)
                        .find(|attribute| attribute.number == 1 && attribute.wire == LEN)
                        .map(|attribute| &model[attribute.start..attribute.end]);
                    read.known_attributes &=
                        name.is_some_and(|name| KNOWN_ATTRIBUTES.iter().any(|known| known.as_bytes() == name));
                }
                _ => {}
            }
        }
        Ok(read)
    }

    fn is_attention(&self) -> bool {
        self.op_type == OP_TYPE.as_bytes() && self.domain == MICROSOFT.as_bytes()
    }

    /// Whether the kernel implements the node.
    fn supported(&self) -> bool {
        self.known_attributes && self.inputs.len() <= KNOWN_INPUTS
    }
}

/// ModelProto field 8 (opset_import): `{ domain: DOMAIN, version: 1 }`.
fn opset_import() -> Vec<u8> {
    onnx_proto::opset_import(DOMAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(number: u8, text: &str) -> Vec<u8> {
        onnx_proto::len_field(number.into(), text.as_bytes())
    }

    fn message(number: u8, body: &[u8]) -> Vec<u8> {
        onnx_proto::len_field(number.into(), body)
    }

    /// A node reading `inputs`, writing `outputs`, with one attribute.
    fn node(op: &str, domain: &str, attribute: &str, inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let mut body: Vec<u8> = inputs.iter().flat_map(|name| string(1, name)).collect();
        body.extend(outputs.iter().flat_map(|name| string(2, name)));
        body.extend(string(4, op));
        body.extend(message(5, &[string(1, attribute), vec![0x18, 9]].concat()));
        body.extend(string(7, domain));
        message(1, &body)
    }

    fn attention(layer: usize, attribute: &str) -> Vec<u8> {
        let (past_key, past_value) = (format!("past.{layer}.key"), format!("past.{layer}.value"));
        let (present_key, present_value) = (format!("present.{layer}.key"), format!("present.{layer}.value"));
        let inputs = ["qkv", "", "", &past_key, &past_value, "seqlens", "total"];
        node(OP_TYPE, MICROSOFT, attribute, &inputs, &["out", &present_key, &present_value])
    }

    /// A ValueInfoProto (graph field `number`) of a tensor of `element_type`.
    fn tensor(number: u8, name: &str, element_type: u8) -> Vec<u8> {
        let tensor_type = message(1, &[0x08, element_type]);
        message(number, &[string(1, name), message(2, &tensor_type)].concat())
    }

    /// A model of two attention layers (`attributes`) and a MatMulNBits; `extra` nodes added.
    fn model(attributes: [&str; 2], extra: &[u8]) -> Vec<u8> {
        let mut graph = [attention(0, attributes[0]), attention(1, attributes[1])].concat();
        graph.extend(node("MatMulNBits", MICROSOFT, "bits", &["out"], &["logits"]));
        graph.extend_from_slice(extra);
        graph.extend(tensor(11, "input_ids", 7));
        for layer in 0..2 {
            for kind in ["key", "value"] {
                graph.extend(tensor(11, &format!("past.{layer}.{kind}"), FLOAT));
                graph.extend(tensor(12, &format!("present.{layer}.{kind}"), FLOAT));
            }
        }
        graph.extend(tensor(12, "logits", FLOAT));
        [vec![0x08, 10], message(7, &graph), message(8, &[string(1, MICROSOFT), vec![0x10, 1]].concat())].concat()
    }

    /// The element type of every graph input and output, by name.
    fn element_types(model: &[u8]) -> Vec<(String, u8)> {
        let graph = Fields::new(model, 0).map(Result::unwrap).find(|field| field.number == 7).unwrap();
        Fields::new(&model[..graph.end], graph.start)
            .map(Result::unwrap)
            .filter(|field| field.number == 11 || field.number == 12)
            .map(|field| {
                let (name, at) = value_info(model, &field).unwrap();
                (String::from_utf8_lossy(name).into_owned(), model[at.unwrap()])
            })
            .collect()
    }

    #[test]
    fn moves_the_attention_nodes_and_makes_their_kv_bfloat16() {
        let model = model(["num_heads", "num_heads"], &[]);
        let (rewritten, moved) = rewrite(&model).unwrap();
        assert_eq!(moved, 2);
        let text = String::from_utf8_lossy(&rewritten);
        assert_eq!(text.matches(DOMAIN).count(), 3, "two nodes and the opset import");
        assert_eq!(text.matches(MICROSOFT).count(), 2, "MatMulNBits and the original import stay");
        assert_eq!(rewritten.len(), model.len() + opset_import().len());
        for (name, element_type) in element_types(&rewritten) {
            let kv = name.starts_with("past.") || name.starts_with("present.");
            let expected = if kv {
                BFLOAT16
            } else if name == "input_ids" {
                7
            } else {
                FLOAT
            };
            assert_eq!(element_type, expected, "{name}");
        }
    }

    #[test]
    fn a_node_the_kernel_does_not_implement_leaves_the_model_as_it_is() {
        let model = model(["num_heads", "smooth_softmax"], &[]);
        assert_eq!(rewrite(&model).unwrap(), (model.clone(), 0));
    }

    #[test]
    fn kv_that_another_node_reads_is_refused() {
        let reader = node("Shape", "", "start", &["past.1.key"], &["shape"]);
        let model = model(["num_heads", "num_heads"], &reader);
        let why = rewrite(&model).unwrap_err();
        assert!(why.contains("past.1.key"), "{why}");
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let model = model(["num_heads", "num_heads"], &[]);
        for cut in 1..model.len() {
            let _ = rewrite(&model[..cut]);
        }
        assert!(rewrite(&model[..model.len() - 3]).is_err());
    }
}
