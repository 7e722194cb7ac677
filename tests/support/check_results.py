#!/usr/bin/python3
"""Reads a QuantLab fold folder the way outside tools do, independently of QuantLab's writers.

The TensorBoard event file is parsed from TensorFlow's documented TFRecord framing (uint64
length, masked CRC-32C of the length, the record, masked CRC-32C of the record), with CRC-32C
computed here bit by bit, and the Event/Summary messages are described to python3-protobuf from
the field numbers of tensorflow/core/util/event.proto and framework/summary.proto (not from
QuantLab's .proto file). metrics.h5 is read with h5py. The scalars of both must agree.

usage: check_results.py FOLD_DIR   (prints a summary; exit 1 with a message on any mismatch)
"""
import glob
import struct
import sys

import h5py
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def event_class():
    f = descriptor_pb2.FileDescriptorProto(name="reader_event.proto", package="reader", syntax="proto3")

    def message(name, fields, nested=()):
        m = f.message_type.add(name=name) if not nested else nested
        for number, field_name, kind, label, type_name in fields:
            field = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("HistogramProto", [(1, "min", F.TYPE_DOUBLE, opt, None), (2, "max", F.TYPE_DOUBLE, opt, None),
                               (3, "num", F.TYPE_DOUBLE, opt, None), (4, "sum", F.TYPE_DOUBLE, opt, None),
                               (5, "sum_squares", F.TYPE_DOUBLE, opt, None),
                               (6, "bucket_limit", F.TYPE_DOUBLE, rep, None),
                               (7, "bucket", F.TYPE_DOUBLE, rep, None)])
    summary = f.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    message(None, [(1, "tag", F.TYPE_STRING, opt, None), (2, "simple_value", F.TYPE_FLOAT, opt, None),
                   (5, "histo", F.TYPE_MESSAGE, opt, ".reader.HistogramProto")], value)
    message(None, [(1, "value", F.TYPE_MESSAGE, rep, ".reader.Summary.Value")], summary)
    message("SessionLog", [(1, "status", F.TYPE_INT32, opt, None), (3, "msg", F.TYPE_STRING, opt, None)])
    message("Event", [(1, "wall_time", F.TYPE_DOUBLE, opt, None), (2, "step", F.TYPE_INT64, opt, None),
                      (3, "file_version", F.TYPE_STRING, opt, None),
                      (5, "summary", F.TYPE_MESSAGE, opt, ".reader.Summary"),
                      (7, "session_log", F.TYPE_MESSAGE, opt, ".reader.SessionLog")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("reader.Event"))


def records(path):
    with open(path, "rb") as stream:
        data = stream.read()
    at = 0
    while at < len(data):
        if len(data) - at < 12:
            raise SystemExit(f"{path}: truncated record header at byte {at}")
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8:at + 12])
        if masked(crc32c(header)) != length_crc:
            raise SystemExit(f"{path}: bad length CRC at byte {at}")
        body = data[at + 12:at + 12 + length]
        (body_crc,) = struct.unpack("<I", data[at + 12 + length:at + 16 + length])
        if masked(crc32c(body)) != body_crc:
            raise SystemExit(f"{path}: bad data CRC at byte {at}")
        yield body
        at += 16 + length


def main(fold):
    Event = event_class()
    scalars, histograms, versions, starts = {}, {}, [], []
    files = sorted(glob.glob(f"{fold}/events.out.tfevents.*"))
    if not files:
        raise SystemExit(f"{fold}: no event file")
    for path in files:
        for body in records(path):
            event = Event.FromString(body)
            if event.file_version:
                versions.append(event.file_version)
            if event.HasField("session_log"):
                starts.append(event.step)
                # TensorBoard drops what an interrupted attempt wrote at or after a restart.
                for series in scalars.values():
                    series[:] = [(s, v) for s, v in series if s < event.step]
            for value in event.summary.value:
                if value.HasField("histo"):
                    h = value.histo
                    if abs(sum(h.bucket) - h.num) > 1e-6 or len(h.bucket) != len(h.bucket_limit):
                        raise SystemExit(f"histogram {value.tag}: counts do not add up")
                    histograms.setdefault(value.tag, []).append(event.step)
                else:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    if versions[:1] != ["brain.Event:2"]:
        raise SystemExit(f"first event is not file_version brain.Event:2: {versions[:1]}")
    with h5py.File(f"{fold}/metrics.h5", "r") as h5:
        for tag, series in scalars.items():
            table = h5[tag][()]
            h5_series = [(int(s), float(v)) for s, v in zip(table["step"], table["value"])]
            if len(h5_series) != len(series):
                raise SystemExit(f"{tag}: {len(series)} events but {len(h5_series)} rows in metrics.h5")
            for (s1, v1), (s2, v2) in zip(series, h5_series):
                if s1 != s2 or abs(v1 - v2) > 1e-6 * max(1.0, abs(v2)):
                    raise SystemExit(f"{tag}: event ({s1}, {v1}) but metrics.h5 ({s2}, {v2})")
        for tag in histograms:
            if f"histograms/{tag}/counts" not in h5:
                raise SystemExit(f"histogram {tag} missing from metrics.h5")
    print(f"files {len(files)} restarts {starts}")
    for tag in sorted(scalars):
        print(f"scalar {tag} {len(scalars[tag])}")
    for tag in sorted(histograms):
        print(f"histogram {tag} {len(histograms[tag])}")


if __name__ == "__main__":
    main(sys.argv[1])
