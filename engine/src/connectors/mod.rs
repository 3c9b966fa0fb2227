//! Built-in sources and sinks: the open-loop generator, the splittable file source, the
//! file sink, the dead-letter sink and the latency sink. They implement the public
//! `Source`/`Sink` traits like any user connector would; nothing here is special-cased
//! by the runtime.

mod file_sink;
mod file_source;
mod generator;
mod latency_sink;

pub use file_sink::{committed_files, csv_field, part_file, DeadLetter, DeadLetterSink, FileSink};
pub use file_source::{FileLine, FileSource};
pub use generator::{GenTick, Generator};
pub use latency_sink::LatencySink;
