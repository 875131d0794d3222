//! The few pieces of the protobuf wire format that nib's graph rewrites need (`attention::graph`,
//! `linear::graph`): reading the fields of a message in place, and writing length-delimited
//! fields. No schema: callers know the ONNX field numbers they touch.

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const FIXED32: u8 = 5;

/// One field of a protobuf message: its key starts at `key`; for a length-delimited one, its
/// payload is `start..end` (else `start..end` is the value).
pub(crate) struct Field {
    pub number: u64,
    pub wire: u8,
    pub key: usize,
    pub start: usize,
    pub end: usize,
}

/// The fields of the message in `bytes[at..]`.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8], at: usize) -> Self {
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
        let key_at = self.at;
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
                return self.checked(Field { number, wire, key: key_at, start: payload, end: self.at });
            }
            other => return Err(format!("the model file has a field of unknown wire type {other}")),
        };
        self.at = end;
        self.checked(Field { number, wire, key: key_at, start, end })
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

/// The value of a varint field (`field.start..field.end`), as two's complement for negatives.
pub(crate) fn varint_value(bytes: &[u8], field: &Field) -> i64 {
    let mut value = 0u64;
    for (index, byte) in bytes[field.start..field.end].iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
    }
    value as i64
}

/// Appends field `number` with `payload` as a length-delimited field.
pub(crate) fn put_len(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    put_varint(out, (number << 3) | u64::from(LEN));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Field `number` with `payload`, length-delimited, as bytes of its own (tests build models
/// with it).
#[cfg(test)]
pub(crate) fn len_field(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut field = Vec::new();
    put_len(&mut field, number, payload);
    field
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The domain and op type of every node of the model's main graph, in order (ModelProto field
/// 7, the graph; its field 1, the nodes; their fields 7 and 4, the domain and the op type).
pub(crate) fn node_ops(model: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut ops = Vec::new();
    for graph in Fields::new(model, 0) {
        let graph = graph?;
        if (graph.number, graph.wire) != (7, LEN) {
            continue;
        }
        for node in Fields::new(&model[..graph.end], graph.start) {
            let node = node?;
            if (node.number, node.wire) != (1, LEN) {
                continue;
            }
            let (mut domain, mut op_type) = (String::new(), String::new());
            for field in Fields::new(&model[..node.end], node.start) {
                let field = field?;
                let text = || String::from_utf8_lossy(&model[field.start..field.end]).into_owned();
                match (field.number, field.wire) {
                    (4, LEN) => op_type = text(),
                    (7, LEN) => domain = text(),
                    _ => {}
                }
            }
            ops.push((domain, op_type));
        }
    }
    Ok(ops)
}

/// ModelProto field 8 (opset_import): `{ domain, version: 1 }`.
pub(crate) fn opset_import(domain: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    put_len(&mut entry, 1, domain.as_bytes());
    entry.extend_from_slice(&[0x10, 0x01]);
    let mut field = Vec::new();
    put_len(&mut field, 8, &entry);
    field
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_fields_read_back() {
        let long = vec![7u8; 300];
        let mut message = Vec::new();
        put_len(&mut message, 1, b"short");
        put_len(&mut message, 12, &long);
        message.extend_from_slice(&[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        let fields: Vec<Field> = Fields::new(&message, 0).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields.len(), 3);
        assert_eq!((fields[0].number, &message[fields[0].start..fields[0].end]), (1, &b"short"[..]));
        assert_eq!((fields[1].number, fields[1].end - fields[1].start), (12, 300));
        assert_eq!(fields[1].key, fields[0].end);
        assert_eq!((fields[2].number, varint_value(&message, &fields[2])), (3, -1));
    }

    #[test]
    fn node_ops_lists_the_graphs_nodes_in_order() {
        let node = |domain: &str, op_type: &str| {
            let fields = [len_field(1, b"x"), len_field(4, op_type.as_bytes()), len_field(7, domain.as_bytes())];
            len_field(1, &fields.concat())
        };
        let graph = [node("com.microsoft", "MatMulNBits"), len_field(2, b"a graph name"), node("", "Add")].concat();
        let model = [vec![0x08, 10], len_field(7, &graph), opset_import("nib.linear")].concat();
        let owned = |(domain, op_type): (&str, &str)| (domain.to_string(), op_type.to_string());
        assert_eq!(node_ops(&model).unwrap(), [owned(("com.microsoft", "MatMulNBits")), owned(("", "Add"))]);
        assert!(node_ops(&model[..model.len() - 4]).is_err(), "a truncated model is an error");
    }
}
