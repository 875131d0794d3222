//! Puts nib's operator in place of the graph's 4- and 8-bit `com.microsoft` MatMulNBits nodes
//! (block 32, no zero points, bias or group index), each together with the offset correction the
//! converter puts beside it (`models/nib_convert/graph.py` `_linear`): `Reshape(x) →
//! ReduceSum → MatMul(offsets) → Add` becomes the node's fourth input, `offsets`, and the node
//! takes over the `Add`'s output. The graph message is written anew with those nodes replaced
//! and the correction's nodes left out; every other byte of the model stays as it was, and an
//! opset import for nib's domain is appended.

use std::collections::{HashMap, HashSet};

use crate::engine::onnx_proto::{self, Field, Fields, LEN, VARINT};

/// nib's operator domain and type.
pub(crate) const DOMAIN: &str = "nib.linear";
pub(crate) const OP_TYPE: &str = "QuantizedLinear";
/// The attribute saying the node's input is `[gate, up]` and the node multiplies
/// `silu(gate) · up` (see `swiglu_before`).
pub(crate) const SWIGLU: &str = "swiglu";
const MICROSOFT: &str = "com.microsoft";

/// ONNX field numbers used here.
const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_OUTPUT: u64 = 12;
const NODE_INPUT: u64 = 1;
const NODE_OUTPUT: u64 = 2;
const NODE_NAME: u64 = 3;
const NODE_OP_TYPE: u64 = 4;
const NODE_ATTRIBUTE: u64 = 5;
const NODE_DOMAIN: u64 = 7;
const ATTRIBUTE_NAME: u64 = 1;
const ATTRIBUTE_INT: u64 = 3;
const ATTRIBUTE_TYPE: u64 = 20;
const ATTRIBUTE_TYPE_INT: u8 = 2;
const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_INT64_DATA: u64 = 7;
const TENSOR_NAME: u64 = 8;
const TENSOR_RAW_DATA: u64 = 9;
const FLOAT: i64 = 1;
const INT64: i64 = 7;

/// `model` with its supported MatMulNBits nodes moved to `DOMAIN`, and how many were.
pub(crate) fn rewrite(model: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let mut output = Vec::with_capacity(model.len() + 64);
    let mut moved = 0;
    for field in Fields::new(model, 0) {
        let field = field?;
        if field.number == MODEL_GRAPH && field.wire == LEN {
            let (graph, count) = rewrite_graph(model, &field)?;
            onnx_proto::put_len(&mut output, MODEL_GRAPH, &graph);
            moved += count;
        } else {
            output.extend_from_slice(&model[field.key..field.end]);
        }
    }
    if moved == 0 {
        return Ok((model.to_vec(), 0));
    }
    output.extend(onnx_proto::opset_import(DOMAIN));
    Ok((output, moved))
}

/// One node as read from the model.
#[derive(Default)]
struct Node {
    op_type: String,
    domain: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    name: Option<String>,
    /// Whole attribute fields (key included), to copy.
    attributes: Vec<(usize, usize)>,
    ints: HashMap<String, i64>,
}

/// A small initializer: its type, shape and, for int64 data stored in the model, its values.
struct Initializer {
    data_type: i64,
    dims: Vec<i64>,
    int64s: Option<Vec<i64>>,
}

/// What the graph says about names: who makes and who reads each value.
#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    initializers: HashMap<String, Initializer>,
    outputs: HashSet<String>,
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
}

/// How one MatMulNBits node is replaced.
struct Replacement {
    offsets: Option<String>,
    output: String,
    /// The gate and up projections' output, when the node computes `silu(gate) · up` of it
    /// itself (the `swiglu` attribute) in place of the graph's SwiGLU nodes.
    gated: Option<String>,
}

fn rewrite_graph(model: &[u8], graph_field: &Field) -> Result<(Vec<u8>, usize), String> {
    let graph = read_graph(model, graph_field)?;
    if graph.nodes.iter().any(|node| matches!(node.op_type.as_str(), "If" | "Loop" | "Scan")) {
        return Ok((model[graph_field.start..graph_field.end].to_vec(), 0));
    }
    let mut replacements = HashMap::new();
    let mut removed = HashSet::new();
    for (index, node) in graph.nodes.iter().enumerate() {
        if !supported(node) {
            continue;
        }
        let fused = offset_correction(&graph, index);
        let replacement = match &fused {
            Some((offsets, add, correction)) => {
                removed.extend(correction.iter().copied());
                let output = graph.nodes[*add].outputs[0].clone();
                Replacement { offsets: Some(offsets.clone()), output, gated: None }
            }
            None => Replacement { offsets: None, output: node.outputs[0].clone(), gated: None },
        };
        replacements.insert(index, replacement);
    }
    remove_dead_block_sums(&graph, &mut removed);
    for (&index, replacement) in replacements.iter_mut() {
        if let Some((gate_up, swiglu)) = swiglu_before(&graph, index, &removed) {
            removed.extend(swiglu);
            replacement.gated = Some(gate_up);
        }
    }
    let mut output = Vec::with_capacity(graph_field.end - graph_field.start);
    let mut index = 0;
    for field in Fields::new(&model[..graph_field.end], graph_field.start) {
        let field = field?;
        if field.number == GRAPH_NODE && field.wire == LEN {
            if let Some(replacement) = replacements.get(&index) {
                onnx_proto::put_len(&mut output, GRAPH_NODE, &replaced_node(model, &graph.nodes[index], replacement));
            } else if !removed.contains(&index) {
                output.extend_from_slice(&model[field.key..field.end]);
            }
            index += 1;
        } else {
            output.extend_from_slice(&model[field.key..field.end]);
        }
    }
    Ok((output, replacements.len()))
}

/// A MatMulNBits the kernel implements: 4 or 8 bits, blocks of 32, K a multiple of 32, inputs
/// `A`, `B`, `scales` only.
fn supported(node: &Node) -> bool {
    let int = |name: &str| node.ints.get(name).copied();
    node.op_type == "MatMulNBits"
        && node.domain == MICROSOFT
        && int("bits").and_then(super::kernel::Bits::from_attribute).is_some()
        && int("block_size") == Some(32)
        && int("K").is_some_and(|k| k > 0 && k % 32 == 0)
        && int("N").is_some_and(|n| n > 0)
        && node.inputs.len() >= 3
        && node.inputs[..3].iter().all(|input| !input.is_empty())
        && node.inputs[3..].iter().all(String::is_empty)
        && node.outputs.len() == 1
}

/// For the MatMulNBits node `index`, the converter's correction after it:
/// `Add(y, MatMul(ReduceSum(Reshape(x, [0, 0, K/32, 32]), axes [-1]), offsets [K/32, N]))`.
/// Returns the offsets' name, the Add and the nodes that become dead (Add and MatMul).
fn offset_correction(graph: &Graph, index: usize) -> Option<(String, usize, Vec<usize>)> {
    let node = &graph.nodes[index];
    let (k, n) = (node.ints["K"], node.ints["N"]);
    let only_consumer = |name: &str| match graph.consumers.get(name).map(Vec::as_slice) {
        Some([one]) if !graph.outputs.contains(name) => Some(*one),
        _ => None,
    };
    let add = only_consumer(&node.outputs[0])?;
    let add_node = &graph.nodes[add];
    if add_node.op_type != "Add" || !add_node.domain.is_empty() || add_node.inputs.len() != 2 {
        return None;
    }
    let other = add_node.inputs.iter().find(|input| **input != node.outputs[0])?;
    let matmul = *graph.producer.get(other)?;
    if only_consumer(other) != Some(add) {
        return None;
    }
    let matmul_node = &graph.nodes[matmul];
    if matmul_node.op_type != "MatMul" || !matmul_node.domain.is_empty() || matmul_node.inputs.len() != 2 {
        return None;
    }
    let offsets = graph.initializers.get(&matmul_node.inputs[1])?;
    if offsets.data_type != FLOAT || offsets.dims != [k / 32, n] {
        return None;
    }
    let reduce = &graph.nodes[*graph.producer.get(&matmul_node.inputs[0])?];
    let int64s = |name: &String| graph.initializers.get(name).and_then(|i| i.int64s.as_deref());
    if reduce.op_type != "ReduceSum"
        || !reduce.domain.is_empty()
        || reduce.ints.get("keepdims") != Some(&0)
        || reduce.inputs.len() != 2
        || int64s(&reduce.inputs[1]) != Some(&[-1])
    {
        return None;
    }
    let reshape = &graph.nodes[*graph.producer.get(&reduce.inputs[0])?];
    if reshape.op_type != "Reshape"
        || !reshape.domain.is_empty()
        || reshape.inputs.len() != 2
        || reshape.inputs[0] != node.inputs[0]
        || int64s(&reshape.inputs[1]) != Some(&[0, 0, k / 32, 32])
    {
        return None;
    }
    Some((matmul_node.inputs[1].clone(), add, vec![add, matmul]))
}

/// For the node `index`, the converter's SwiGLU before it (`models/nib_convert/graph.py`):
/// `Mul(Mul(g, Sigmoid(g)), u)` with `g, u = Split(x, [K, K], axis -1)`, each value read only
/// there (or by nodes already `removed`). Returns `x` and the four nodes that become dead.
fn swiglu_before(graph: &Graph, index: usize, removed: &HashSet<usize>) -> Option<(String, Vec<usize>)> {
    let k = graph.nodes[index].ints["K"];
    let plain = |name: &String, op_type: &str| {
        let producer = *graph.producer.get(name)?;
        let node = &graph.nodes[producer];
        (node.op_type == op_type && node.domain.is_empty()).then_some((producer, node))
    };
    let (swiglu, swiglu_node) = plain(&graph.nodes[index].inputs[0], "Mul")?;
    let [silu_out, up] = swiglu_node.inputs.as_slice() else { return None };
    let (silu, silu_node) = plain(silu_out, "Mul")?;
    let [gate, sigmoid_out] = silu_node.inputs.as_slice() else { return None };
    let (sigmoid, sigmoid_node) = plain(sigmoid_out, "Sigmoid")?;
    let (split, split_node) = plain(gate, "Split")?;
    let sizes = split_node.inputs.get(1).and_then(|name| graph.initializers.get(name)?.int64s.as_deref());
    if sigmoid_node.inputs != [gate.clone()]
        || split_node.outputs != [gate.clone(), up.clone()]
        || split_node.ints.get("axis") != Some(&-1)
        || sizes != Some(&[k, k])
    {
        return None;
    }
    let read_only_by = |name: &String, readers: &[usize]| {
        !graph.outputs.contains(name)
            && graph
                .consumers
                .get(name)
                .is_some_and(|all| all.iter().all(|r| readers.contains(r) || removed.contains(r)))
    };
    let private = read_only_by(&graph.nodes[index].inputs[0], &[index])
        && read_only_by(silu_out, &[swiglu])
        && read_only_by(up, &[swiglu])
        && read_only_by(sigmoid_out, &[silu])
        && read_only_by(gate, &[sigmoid, silu]);
    private.then(|| (split_node.inputs[0].clone(), vec![split, sigmoid, silu, swiglu]))
}

/// Adds to `removed` the block sums (ReduceSum, then its Reshape) that only removed nodes read.
fn remove_dead_block_sums(graph: &Graph, removed: &mut HashSet<usize>) {
    for op_type in ["ReduceSum", "Reshape"] {
        for (index, node) in graph.nodes.iter().enumerate() {
            let dead = node.outputs.iter().all(|output| {
                !graph.outputs.contains(output)
                    && graph.consumers.get(output).is_some_and(|readers| readers.iter().all(|r| removed.contains(r)))
            });
            if node.op_type == op_type && node.domain.is_empty() && dead {
                removed.insert(index);
            }
        }
    }
}

/// The NodeProto of nib's operator in place of `node`.
fn replaced_node(model: &[u8], node: &Node, replacement: &Replacement) -> Vec<u8> {
    let mut bytes = Vec::new();
    let input = replacement.gated.as_ref().unwrap_or(&node.inputs[0]);
    let inputs = [input].into_iter().chain(&node.inputs[1..3]).chain(replacement.offsets.as_ref());
    for input in inputs {
        onnx_proto::put_len(&mut bytes, NODE_INPUT, input.as_bytes());
    }
    onnx_proto::put_len(&mut bytes, NODE_OUTPUT, replacement.output.as_bytes());
    if let Some(name) = &node.name {
        onnx_proto::put_len(&mut bytes, NODE_NAME, name.as_bytes());
    }
    onnx_proto::put_len(&mut bytes, NODE_OP_TYPE, OP_TYPE.as_bytes());
    for &(start, end) in &node.attributes {
        bytes.extend_from_slice(&model[start..end]);
    }
    if replacement.gated.is_some() {
        onnx_proto::put_len(&mut bytes, NODE_ATTRIBUTE, &int_attribute(SWIGLU, 1));
    }
    onnx_proto::put_len(&mut bytes, NODE_DOMAIN, DOMAIN.as_bytes());
    bytes
}

/// An AttributeProto holding one integer.
fn int_attribute(name: &str, value: i64) -> Vec<u8> {
    let mut attribute = Vec::new();
    onnx_proto::put_len(&mut attribute, ATTRIBUTE_NAME, name.as_bytes());
    onnx_proto::put_varint(&mut attribute, ATTRIBUTE_INT << 3 | u64::from(VARINT));
    onnx_proto::put_varint(&mut attribute, value as u64);
    onnx_proto::put_varint(&mut attribute, ATTRIBUTE_TYPE << 3 | u64::from(VARINT));
    attribute.push(ATTRIBUTE_TYPE_INT);
    attribute
}

/// `model` with every MatMulNBits' `accuracy_level` set to 0 (float activations: the exact
/// reference the tests compare both int8 kernels with).
#[cfg(test)]
pub(crate) fn exact_activations(model: &[u8]) -> Result<Vec<u8>, String> {
    let mut bytes = model.to_vec();
    let graph_field = Fields::new(model, 0).filter_map(Result::ok).find(|f| f.number == MODEL_GRAPH);
    let graph_field = graph_field.ok_or("the model has no graph")?;
    for node in read_graph(model, &graph_field)?.nodes.iter().filter(|node| node.op_type == "MatMulNBits") {
        for &(start, end) in &node.attributes {
            let attribute = Fields::new(&model[..end], start).filter_map(Result::ok).next();
            let Some(attribute) = attribute.filter(|a| a.number == NODE_ATTRIBUTE) else { continue };
            let fields: Vec<Field> =
                Fields::new(&model[..attribute.end], attribute.start).filter_map(Result::ok).collect();
            let named = fields.iter().any(|f| f.number == ATTRIBUTE_NAME && text(model, f) == "accuracy_level");
            if let Some(int) =
                fields.iter().find(|f| f.number == ATTRIBUTE_INT && f.end == f.start + 1).filter(|_| named)
            {
                bytes[int.start] = 0;
            }
        }
    }
    Ok(bytes)
}

fn text(model: &[u8], field: &Field) -> String {
    String::from_utf8_lossy(&model[field.start..field.end]).into_owned()
}

fn read_graph(model: &[u8], graph_field: &Field) -> Result<Graph, String> {
    let mut graph = Graph::default();
    for field in Fields::new(&model[..graph_field.end], graph_field.start) {
        let field = field?;
        match (field.number, field.wire) {
            (GRAPH_NODE, LEN) => graph.nodes.push(read_node(model, &field)?),
            (GRAPH_INITIALIZER, LEN) => {
                let (name, initializer) = read_initializer(model, &field)?;
                graph.initializers.insert(name, initializer);
            }
            (GRAPH_OUTPUT, LEN) => {
                let name = Fields::new(&model[..field.end], field.start)
                    .filter_map(Result::ok)
                    .find(|f| f.number == 1 && f.wire == LEN);
                graph.outputs.extend(name.map(|name| text(model, &name)));
            }
            _ => {}
        }
    }
    for (index, node) in graph.nodes.iter().enumerate() {
        for output in &node.outputs {
            graph.producer.insert(output.clone(), index);
        }
        for input in node.inputs.iter().filter(|input| !input.is_empty()) {
            graph.consumers.entry(input.clone()).or_default().push(index);
        }
    }
    Ok(graph)
}

fn read_node(model: &[u8], node_field: &Field) -> Result<Node, String> {
    let mut node = Node::default();
    for field in Fields::new(&model[..node_field.end], node_field.start) {
        let field = field?;
        match (field.number, field.wire) {
            (NODE_INPUT, LEN) => node.inputs.push(text(model, &field)),
            (NODE_OUTPUT, LEN) => node.outputs.push(text(model, &field)),
            (NODE_NAME, LEN) => node.name = Some(text(model, &field)),
            (NODE_OP_TYPE, LEN) => node.op_type = text(model, &field),
            (NODE_DOMAIN, LEN) => node.domain = text(model, &field),
            (NODE_ATTRIBUTE, LEN) => {
                node.attributes.push((field.key, field.end));
                let (mut name, mut int) = (None, None);
                for attribute in Fields::new(&model[..field.end], field.start) {
                    let attribute = attribute?;
                    match (attribute.number, attribute.wire) {
                        (ATTRIBUTE_NAME, LEN) => name = Some(text(model, &attribute)),
                        (ATTRIBUTE_INT, VARINT) => int = Some(onnx_proto::varint_value(model, &attribute)),
                        _ => {}
                    }
                }
                if let (Some(name), Some(int)) = (name, int) {
                    node.ints.insert(name, int);
                }
            }
            _ => {}
        }
    }
    Ok(node)
}

fn read_initializer(model: &[u8], tensor: &Field) -> Result<(String, Initializer), String> {
    let (mut name, mut initializer) = (String::new(), Initializer { data_type: 0, dims: Vec::new(), int64s: None });
    let mut values = Vec::new();
    for field in Fields::new(&model[..tensor.end], tensor.start) {
        let field = field?;
        match (field.number, field.wire) {
            (TENSOR_NAME, LEN) => name = text(model, &field),
            (TENSOR_DATA_TYPE, VARINT) => initializer.data_type = onnx_proto::varint_value(model, &field),
            (TENSOR_DIMS, VARINT) => initializer.dims.push(onnx_proto::varint_value(model, &field)),
            (TENSOR_DIMS, LEN) => initializer.dims.extend(packed_varints(model, &field)?),
            (TENSOR_INT64_DATA, VARINT) => values.push(onnx_proto::varint_value(model, &field)),
            (TENSOR_INT64_DATA, LEN) => values.extend(packed_varints(model, &field)?),
            (TENSOR_RAW_DATA, LEN) => {
                let raw = &model[field.start..field.end];
                values.extend(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))));
            }
            _ => {}
        }
    }
    let count: i64 = initializer.dims.iter().product();
    if initializer.data_type == INT64 && values.len() as i64 == count {
        initializer.int64s = Some(values);
    }
    Ok((name, initializer))
}

/// A packed repeated varint field's values.
fn packed_varints(model: &[u8], field: &Field) -> Result<Vec<i64>, String> {
    let mut values = Vec::new();
    let (mut value, mut shift) = (0u64, 0);
    for &byte in &model[field.start..field.end] {
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            values.push(value as i64);
            (value, shift) = (0, 0);
        } else {
            shift += 7;
            if shift >= 64 {
                return Err("a number in the model file is too long".into());
            }
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(number: u64, text: &str) -> Vec<u8> {
        onnx_proto::len_field(number, text.as_bytes())
    }

    fn message(number: u64, body: &[u8]) -> Vec<u8> {
        onnx_proto::len_field(number, body)
    }

    fn attribute(name: &str, value: i64) -> Vec<u8> {
        message(NODE_ATTRIBUTE, &int_attribute(name, value))
    }

    fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str], ints: &[(&str, i64)]) -> Vec<u8> {
        let mut body = Vec::new();
        for input in inputs {
            body.extend(string(NODE_INPUT, input));
        }
        for output in outputs {
            body.extend(string(NODE_OUTPUT, output));
        }
        body.extend(string(NODE_NAME, &format!("{op}/{}", outputs[0])));
        body.extend(string(NODE_OP_TYPE, op));
        for (name, value) in ints {
            body.extend(attribute(name, *value));
        }
        if !domain.is_empty() {
            body.extend(string(NODE_DOMAIN, domain));
        }
        message(GRAPH_NODE, &body)
    }

    fn int64_initializer(name: &str, values: &[i64]) -> Vec<u8> {
        let mut body = vec![0x08, values.len() as u8, 0x10, INT64 as u8];
        body.extend(string(TENSOR_NAME, name));
        body.extend(message(TENSOR_RAW_DATA, &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
        message(GRAPH_INITIALIZER, &body)
    }

    fn float_initializer(name: &str, dims: &[i64]) -> Vec<u8> {
        let mut body = Vec::new();
        for &dim in dims {
            body.extend([0x08, dim as u8]);
        }
        body.extend([0x10, FLOAT as u8]);
        body.extend(string(TENSOR_NAME, name));
        message(GRAPH_INITIALIZER, &body)
    }

    const NBITS: [(&str, i64); 5] = [("K", 64), ("N", 3), ("bits", 4), ("block_size", 32), ("accuracy_level", 4)];

    /// The converter's layer: MatMulNBits and its offset correction, then a plain one (Q4_0),
    /// an 8-bit one (the LM head) and a 2-bit one (left alone).
    fn model() -> Vec<u8> {
        let graph = [
            node("MatMulNBits", MICROSOFT, &["x", "l.qweight", "l.scales"], &["y0"], &NBITS),
            node("Reshape", "", &["x", "shape"], &["r"], &[]),
            node("ReduceSum", "", &["r", "axes"], &["s"], &[("keepdims", 0)]),
            node("MatMul", "", &["s", "l.offsets"], &["c"], &[]),
            node("Add", "", &["y0", "c"], &["y"], &[]),
            node("MatMulNBits", MICROSOFT, &["y", "m.qweight", "m.scales"], &["z"], &NBITS),
            node(
                "MatMulNBits",
                MICROSOFT,
                &["z", "h.qweight", "h.scales"],
                &["h"],
                &[("K", 64), ("N", 3), ("bits", 8), ("block_size", 32)],
            ),
            node(
                "MatMulNBits",
                MICROSOFT,
                &["h", "t.qweight", "t.scales"],
                &["logits"],
                &[("K", 64), ("N", 3), ("bits", 2), ("block_size", 32)],
            ),
            int64_initializer("shape", &[0, 0, 2, 32]),
            int64_initializer("axes", &[-1]),
            float_initializer("l.offsets", &[2, 3]),
            message(GRAPH_OUTPUT, &string(1, "logits")),
        ]
        .concat();
        [vec![0x08, 10], message(MODEL_GRAPH, &graph), message(8, &[string(1, MICROSOFT), vec![0x10, 1]].concat())]
            .concat()
    }

    fn nodes_of(model: &[u8]) -> Vec<Node> {
        let graph = Fields::new(model, 0).map(Result::unwrap).find(|f| f.number == MODEL_GRAPH).unwrap();
        read_graph(model, &graph).unwrap().nodes
    }

    #[test]
    fn fuses_the_offset_correction_and_leaves_other_nodes() {
        let (rewritten, moved) = rewrite(&model()).unwrap();
        assert_eq!(moved, 3, "the Q4_1 layer, the Q4_0 one and the 8-bit head; not the 2-bit one");
        let nodes = nodes_of(&rewritten);
        let summary: Vec<(String, Vec<String>, Vec<String>)> = nodes
            .iter()
            .map(|n| (format!("{}:{}", n.domain, n.op_type), n.inputs.clone(), n.outputs.clone()))
            .collect();
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            summary,
            vec![
                (format!("{DOMAIN}:{OP_TYPE}"), owned(&["x", "l.qweight", "l.scales", "l.offsets"]), owned(&["y"])),
                (format!("{DOMAIN}:{OP_TYPE}"), owned(&["y", "m.qweight", "m.scales"]), owned(&["z"])),
                (format!("{DOMAIN}:{OP_TYPE}"), owned(&["z", "h.qweight", "h.scales"]), owned(&["h"])),
                (format!("{MICROSOFT}:MatMulNBits"), owned(&["h", "t.qweight", "t.scales"]), owned(&["logits"])),
            ]
        );
        assert_eq!(nodes[0].ints["K"], 64, "attributes are kept");
        assert_eq!(nodes[0].name.as_deref(), Some("MatMulNBits/y0"));
        assert!(String::from_utf8_lossy(&rewritten).ends_with("nib.linear\u{10}\u{1}"), "the opset import");
    }

    #[test]
    fn a_block_sum_read_elsewhere_stays() {
        let mut model = model();
        // Another reader of `s` (the block sums): the Reshape and ReduceSum must stay.
        let extra = node("Identity", "", &["s"], &["s2"], &[]);
        let graph = Fields::new(&model, 0).map(Result::unwrap).find(|f| f.number == MODEL_GRAPH).unwrap();
        let mut body = model[graph.start..graph.end].to_vec();
        body.extend(extra);
        model = [vec![0x08, 10], message(MODEL_GRAPH, &body)].concat();
        let (rewritten, moved) = rewrite(&model).unwrap();
        assert_eq!(moved, 3);
        let ops: Vec<String> = nodes_of(&rewritten).iter().map(|n| n.op_type.clone()).collect();
        let kept = ["QuantizedLinear", "Reshape", "ReduceSum", "QuantizedLinear", "QuantizedLinear", "MatMulNBits"];
        assert_eq!(ops, [&kept[..], &["Identity"]].concat());
    }

    /// A SwiGLU block as the converter writes it: the gate and up projections, `Split` (into
    /// `halves`), `Sigmoid`, two `Mul`s, the down projection; `extra` nodes are appended.
    fn swiglu_model(halves: &[i64], extra: &[Vec<u8>]) -> Vec<u8> {
        let down = [("K", 64), ("N", 3), ("bits", 4), ("block_size", 32)];
        let graph = [
            node("MatMulNBits", MICROSOFT, &["x", "gu.qweight", "gu.scales"], &["gu"], &NBITS),
            node("Split", "", &["gu", "halves"], &["g", "u"], &[("axis", -1)]),
            node("Sigmoid", "", &["g"], &["s"], &[]),
            node("Mul", "", &["g", "s"], &["a"], &[]),
            node("Mul", "", &["a", "u"], &["h"], &[]),
            node("MatMulNBits", MICROSOFT, &["h", "d.qweight", "d.scales"], &["y"], &down),
            int64_initializer("halves", halves),
            message(GRAPH_OUTPUT, &string(1, "y")),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>()
        .concat();
        [vec![0x08, 10], message(MODEL_GRAPH, &graph)].concat()
    }

    #[test]
    fn the_down_projection_takes_over_the_swiglu() {
        let (rewritten, moved) = rewrite(&swiglu_model(&[64, 64], &[])).unwrap();
        assert_eq!(moved, 2);
        let nodes = nodes_of(&rewritten);
        let ops: Vec<(&str, &[String])> = nodes.iter().map(|n| (n.op_type.as_str(), &n.inputs[..1])).collect();
        assert_eq!(ops, [(OP_TYPE, &["x".to_string()][..]), (OP_TYPE, &["gu".to_string()][..])]);
        assert_eq!(nodes[1].ints.get(SWIGLU), Some(&1), "the down projection multiplies silu(gate) · up");
        assert_eq!(nodes[0].ints.get(SWIGLU), None);
        assert_eq!(nodes[1].ints["K"], 64, "its own attributes are kept");
    }

    #[test]
    fn a_swiglu_value_read_elsewhere_keeps_the_swiglu() {
        for value in ["g", "u", "s", "a", "h"] {
            let (rewritten, moved) =
                rewrite(&swiglu_model(&[64, 64], &[node("Identity", "", &[value], &["z"], &[])])).unwrap();
            assert_eq!(moved, 2, "{value}");
            let nodes = nodes_of(&rewritten);
            let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
            assert_eq!(ops, [OP_TYPE, "Split", "Sigmoid", "Mul", "Mul", OP_TYPE, "Identity"], "{value}");
            assert_eq!(nodes[5].ints.get(SWIGLU), None, "{value}");
        }
        let (rewritten, _) = rewrite(&swiglu_model(&[32, 96], &[])).unwrap();
        assert_eq!(nodes_of(&rewritten).len(), 6, "a split into other parts than K and K is left alone");
    }

    #[test]
    fn a_model_without_supported_nodes_is_returned_as_it_is() {
        let graph = node("MatMulNBits", MICROSOFT, &["x", "q", "s", "zp"], &["y"], &NBITS);
        let model = [vec![0x08, 10], message(MODEL_GRAPH, &graph)].concat();
        assert_eq!(rewrite(&model).unwrap(), (model.clone(), 0), "zero points: left to ONNX Runtime");
    }

    #[test]
    fn a_truncated_model_is_an_error_not_a_panic() {
        let model = model();
        for cut in 1..model.len() {
            let _ = rewrite(&model[..cut]);
        }
        assert!(rewrite(&model[..model.len() - 3]).is_err());
    }
}
