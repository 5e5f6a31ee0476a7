//! The format vectors shared with pytest (`tests/vectors/*.json` at the repository root):
//! the codec's byte vectors and constants, the store layout's keys, metadata records and
//! constants, and the entry cache's weights, checked against this crate.

use std::path::PathBuf;
use std::sync::Arc;

use oprc_core::cache::{self, EntryCache, Record};
use oprc_core::codec::ext;
use oprc_core::codec::msgpack::{self as mp, Reader, Token};
use oprc_core::id::{Identity, ObjectId};
use oprc_core::store::layout::{self, Meta};
use oprc_core::store::redis;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "tests",
        "vectors",
        name,
    ]
    .iter()
    .collect();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64 in {v}"))
}

#[test]
fn codec_constants_match() {
    let doc = load("codec.json");
    let codes = &doc["ext_codes"];
    let ours = [
        ("bigint", ext::EXT_BIGINT),
        ("tuple", ext::EXT_TUPLE),
        ("set", ext::EXT_SET),
        ("frozenset", ext::EXT_FROZENSET),
        ("datetime", ext::EXT_DATETIME),
        ("date", ext::EXT_DATE),
        ("time", ext::EXT_TIME),
        ("timedelta", ext::EXT_TIMEDELTA),
        ("uuid", ext::EXT_UUID),
        ("decimal", ext::EXT_DECIMAL),
        ("ndarray", ext::EXT_NDARRAY),
        ("ref", ext::EXT_REF),
    ];
    assert_eq!(codes.as_object().unwrap().len(), ours.len());
    for (name, code) in ours {
        assert_eq!(num(codes, name), code as u64, "ext code of {name}");
    }
    assert_eq!(num(&doc["limits"], "max_depth"), ext::MAX_DEPTH as u64);
    assert_eq!(num(&doc["limits"], "max_ndim"), ext::MAX_NDIM as u64);
}

/// Reads one value and writes it back with the writer, which picks the smallest header
/// for every value ("one value, one encoding"): a canonical vector comes back byte for
/// byte. Extension payloads are checked by their type's reader where one exists.
fn copy_value(r: &mut Reader<'_>, out: &mut Vec<u8>, depth: usize) {
    assert!(depth <= ext::MAX_DEPTH, "too deep");
    match r.read().expect("well-formed MessagePack") {
        Token::Nil => mp::write_nil(out),
        Token::Bool(b) => mp::write_bool(out, b),
        Token::Uint(u) => mp::write_u64(out, u),
        Token::Int(i) => mp::write_i64(out, i),
        Token::Float(f) => mp::write_f64(out, f),
        Token::Str(s) => mp::write_str(out, s).unwrap(),
        Token::Bin(b) => {
            mp::write_bin_header(out, b.len()).unwrap();
            out.extend_from_slice(b);
        }
        Token::Array(n) => {
            mp::write_array_header(out, n).unwrap();
            for _ in 0..n {
                copy_value(r, out, depth + 1);
            }
        }
        Token::Map(n) => {
            mp::write_map_header(out, n).unwrap();
            for _ in 0..2 * n {
                copy_value(r, out, depth + 1);
            }
        }
        Token::Ext(code, payload) => {
            check_ext(code, payload);
            mp::write_ext_header(out, payload.len(), code).unwrap();
            out.extend_from_slice(payload);
        }
    }
}

fn check_ext(code: i8, payload: &[u8]) {
    match code {
        ext::EXT_BIGINT => ext::check_bigint(payload).unwrap(),
        ext::EXT_TUPLE | ext::EXT_SET | ext::EXT_FROZENSET => {
            // A complete array, itself canonical.
            let mut r = Reader::new(payload);
            let mut again = Vec::new();
            copy_value(&mut r, &mut again, 1);
            assert!(r.is_done(), "ext {code}: trailing bytes");
            assert_eq!(again, payload, "ext {code}: payload is not canonical");
        }
        ext::EXT_REF => {
            let (cls, pid, oid) = ext::get_ref(payload).unwrap();
            let mut again = Vec::new();
            ext::put_ref(&mut again, cls, pid, oid).unwrap();
            assert_eq!(again, payload, "ext 12 payload is not canonical");
        }
        ext::EXT_DATETIME
        | ext::EXT_DATE
        | ext::EXT_TIME
        | ext::EXT_TIMEDELTA
        | ext::EXT_UUID
        | ext::EXT_DECIMAL
        | ext::EXT_NDARRAY => {}
        other => panic!("unknown ext code {other}"),
    }
}

#[test]
fn codec_vectors_read_and_write_back() {
    let doc = load("codec.json");
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 90, "{} vectors", vectors.len());
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let bytes = unhex(v["hex"].as_str().unwrap());
        let mut r = Reader::new(&bytes);
        let mut out = Vec::new();
        copy_value(&mut r, &mut out, 0);
        assert!(r.is_done(), "{name}: trailing bytes");
        assert_eq!(out, bytes, "{name}: written back differently");
    }
}

#[test]
fn codec_int_and_bool_vectors_hold_their_values() {
    let doc = load("codec.json");
    let mut seen = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let (name, hint, value) = (
            v["name"].as_str().unwrap(),
            v["hint"].as_str().unwrap(),
            v["value"].as_str().unwrap(),
        );
        let bytes = unhex(v["hex"].as_str().unwrap());
        match (hint, Reader::new(&bytes).read().unwrap()) {
            ("int", Token::Uint(u)) => assert_eq!(value.parse::<u64>().unwrap(), u, "{name}"),
            ("int", Token::Int(i)) => assert_eq!(value.parse::<i64>().unwrap(), i, "{name}"),
            ("bool", Token::Bool(b)) => assert_eq!(value == "True", b, "{name}"),
            _ => continue,
        }
        seen += 1;
    }
    assert!(seen >= 20, "{seen} int and bool vectors");
}

#[test]
fn layout_constants_match() {
    let doc = load("layout.json");
    let c = &doc["constants"];
    assert_eq!(num(c, "key_sep"), layout::KEY_SEP as u64);
    assert_eq!(num(c, "key_num_id"), layout::KEY_NUM_ID as u64);
    assert_eq!(num(c, "key_str_id"), layout::KEY_STR_ID as u64);
    assert_eq!(num(c, "meta_format"), layout::META_FORMAT as u64);
    assert_eq!(num(c, "meta_len"), layout::META_LEN as u64);
    assert_eq!(unhex(c["format_key"].as_str().unwrap()), layout::FORMAT_KEY);
    assert_eq!(
        unhex(c["format_value"].as_str().unwrap()),
        layout::FORMAT_VALUE
    );
}

#[test]
fn layout_key_vectors() {
    let doc = load("layout.json");
    for k in doc["keys"].as_array().unwrap() {
        let cls = k["cls_id"].as_str().unwrap();
        let pid = u32::try_from(num(k, "partition_id")).unwrap();
        let oid = match &k["object_id"] {
            Value::String(s) => ObjectId::Str(s.clone()),
            n => ObjectId::Num(n.as_u64().unwrap()),
        };
        let want = unhex(k["object_key"].as_str().unwrap());
        assert_eq!(layout::object_key(cls, pid, oid.as_deref()), want, "{k}");
        assert_eq!(Identity::new(cls, pid, oid).object_key(), want, "{k}");
        let field = k["field"].as_str().unwrap();
        let entry = unhex(k["entry_key"].as_str().unwrap());
        assert_eq!(layout::entry_key(&want, field), entry, "{k}");
        assert!(entry.starts_with(&layout::entry_prefix(&want)), "{k}");
        let prefix = doc["constants"]["redis_default_prefix"].as_str().unwrap();
        assert_eq!(prefix, redis::DEFAULT_PREFIX);
        let rkey = k["redis_key"].as_str().unwrap();
        assert_eq!(
            redis::object_key_of(prefix, &want).as_deref(),
            Some(rkey),
            "{k}"
        );
        assert_eq!(
            redis::parse_object_key(prefix, rkey.as_bytes()),
            Some(want),
            "{k}"
        );
    }
}

#[test]
fn layout_meta_vectors() {
    let doc = load("layout.json");
    for m in doc["meta"].as_array().unwrap() {
        let meta = Meta {
            version: num(m, "version"),
            created_ms: m["created_ms"].as_i64().unwrap(),
            updated_ms: m["updated_ms"].as_i64().unwrap(),
        };
        let record = unhex(m["record"].as_str().unwrap());
        assert_eq!(meta.pack().to_vec(), record, "{m}");
        assert_eq!(Meta::unpack(&record), Some(meta), "{m}");
    }
}

#[test]
fn cache_weights_match() {
    let doc = load("cache.json");
    let c = &doc["constants"];
    assert_eq!(num(c, "object_overhead"), cache::OBJECT_OVERHEAD);
    assert_eq!(num(c, "entry_overhead"), cache::ENTRY_OVERHEAD);
    for case in doc["cases"].as_array().unwrap() {
        let entries: Vec<(String, Arc<[u8]>)> = case["entries"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), unhex(v.as_str().unwrap()).into()))
            .collect();
        let rec = Record {
            version: 1,
            created_ms: 0,
            updated_ms: 0,
            entries,
        };
        let weight = num(case, "weight");
        assert_eq!(rec.weight(), weight, "{case}");
        // And what the cache counts against its bound.
        let cache = EntryCache::new(1 << 30, None);
        cache.put(b"k".to_vec(), rec);
        assert_eq!(cache.nbytes(), weight, "{case}");
    }
}
