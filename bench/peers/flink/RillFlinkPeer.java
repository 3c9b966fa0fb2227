// The Flink side of `rill-bench run latency|keyed-async --peer flink`: the same job as
// rill's on Apache Flink 2.x in a local MiniCluster, under the same open-loop schedule.
//
//   generator (open loop, parallelism P) -> keyBy(key) -> per-key count in ValueState
//   -> [keyed-async: AsyncDataStream.orderedWait/unorderedWait, a ScheduledExecutorService
//      delay as the simulated lookup] -> latency sink
//
// Source subtask i of P emits the global sequence numbers i, i+P, i+2P, ... Event `seq`
// is due at start + seq * 1e9 / rate ns and carries that due time; a subtask that falls
// behind emits everything already due at once, still stamped with when it was due (no
// coordinated omission). Due times and arrival times are both System.nanoTime() of this
// JVM (CLOCK_MONOTONIC on Linux, the clock rill's `Instant` reads), so no clock crosses a
// process. `start` is set 200 ms ahead once every source subtask runs and every sink
// writer exists.
//
// The sink keeps every measured latency (ns) in a growable long[] per subtask. At the end
// main() writes each subtask's latencies as little-endian u64 to <out>/latency-<i>.bin and
// prints one line `RILL-FLINK-RESULT {json}` on stdout; the harness builds its
// HdrHistogram from the files exactly as it does for rill.
//
// Arguments: key=value pairs (see Args below). Everything runs in this JVM; the sink's
// results reach main() through static fields (a local environment loads the job's classes
// with the application class loader).

import java.io.BufferedOutputStream;
import java.io.DataOutputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.CheckpointListener;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.CheckpointingOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.execution.CheckpointingMode;
import org.apache.flink.streaming.api.datastream.AsyncDataStream;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.async.ResultFuture;
import org.apache.flink.streaming.api.functions.async.RichAsyncFunction;
import org.apache.flink.streaming.api.functions.source.legacy.RichParallelSourceFunction;
import org.apache.flink.util.Collector;

public class RillFlinkPeer {

    /** One generated event, as rill's LatencyEvent (a Flink POJO). */
    public static class Event {
        public long seq;
        public long key;
        public long dueNs;
        public boolean measure;
        public long count;

        public Event() {}
    }

    /** The job's parameters, from key=value arguments. */
    static final class Args implements java.io.Serializable {
        String pipeline = "latency"; // or "keyed-async"
        long rate = 100_000; // events per second over all subtasks
        long durationMs = 5_000; // the whole schedule, warm-up included
        long warmupMs = 1_000;
        long keys = 10_000;
        int parallelism = 1;
        String mode = "ordered"; // keyed-async: "ordered" | "unordered"
        int capacity = 100;
        long timeoutMs = 10_000;
        long delayUs = 1_000;
        long checkpointMs = 0; // 0: no checkpoints
        boolean exactlyOnce = true;
        boolean unaligned = false;
        String checkpointDir = "";
        String out = "";

        static Args parse(String[] argv) {
            Args a = new Args();
            for (String arg : argv) {
                int eq = arg.indexOf('=');
                if (eq <= 0) {
                    throw new IllegalArgumentException("argument " + arg + ": expected key=value");
                }
                String k = arg.substring(0, eq);
                String v = arg.substring(eq + 1);
                switch (k) {
                    case "pipeline": a.pipeline = v; break;
                    case "rate": a.rate = Long.parseLong(v); break;
                    case "duration_ms": a.durationMs = Long.parseLong(v); break;
                    case "warmup_ms": a.warmupMs = Long.parseLong(v); break;
                    case "keys": a.keys = Long.parseLong(v); break;
                    case "parallelism": a.parallelism = Integer.parseInt(v); break;
                    case "mode": a.mode = v; break;
                    case "capacity": a.capacity = Integer.parseInt(v); break;
                    case "timeout_ms": a.timeoutMs = Long.parseLong(v); break;
                    case "delay_us": a.delayUs = Long.parseLong(v); break;
                    case "checkpoint_ms": a.checkpointMs = Long.parseLong(v); break;
                    case "exactly_once": a.exactlyOnce = Boolean.parseBoolean(v); break;
                    case "unaligned": a.unaligned = Boolean.parseBoolean(v); break;
                    case "checkpoint_dir": a.checkpointDir = v; break;
                    case "out": a.out = v; break;
                    default: throw new IllegalArgumentException("unknown argument " + k);
                }
            }
            if (!a.pipeline.equals("latency") && !a.pipeline.equals("keyed-async")) {
                throw new IllegalArgumentException("pipeline=" + a.pipeline + ": latency or keyed-async");
            }
            if (!a.mode.equals("ordered") && !a.mode.equals("unordered")) {
                throw new IllegalArgumentException("mode=" + a.mode + ": ordered or unordered");
            }
            if (a.rate <= 0 || a.parallelism <= 0 || a.keys <= 0 || a.capacity <= 0) {
                throw new IllegalArgumentException("rate, parallelism, keys and capacity must be > 0");
            }
            if (a.out.isEmpty()) {
                throw new IllegalArgumentException("out=DIR is required");
            }
            if (a.checkpointMs > 0 && a.checkpointDir.isEmpty()) {
                throw new IllegalArgumentException("checkpoint_ms needs checkpoint_dir");
            }
            return a;
        }

        long events() {
            return rate * durationMs / 1000;
        }
    }

    // ---- shared between the tasks and main() (one JVM) --------------------------------

    /** The schedule's start (System.nanoTime), 0 until every source subtask runs. */
    static final AtomicLong START = new AtomicLong(0);
    static final AtomicInteger SOURCES_RUNNING = new AtomicInteger(0);
    static final AtomicInteger SINKS_OPEN = new AtomicInteger(0);
    static final AtomicLong CHECKPOINTS_COMPLETED = new AtomicLong(0);
    static final Map<Integer, SinkResult> RESULTS = new ConcurrentHashMap<>();

    /** What one sink subtask saw. */
    static final class SinkResult {
        long[] latencies;
        int n;
        long sunk;
        long lastArrivalNs;
    }

    // rill's stable_hash of a u64 (engine/src/keys.rs): one multiply-xor round over the
    // FNV-1a offset basis, then the murmur3 finaliser.
    static long stableHash(long v) {
        long s = 0xcbf29ce484222325L;
        s ^= v;
        s *= 0x9e3779b97f4a7c15L;
        s ^= s >>> 29;
        long h = s;
        h ^= h >>> 33;
        h *= 0xff51afd7ed558ccdL;
        h ^= h >>> 33;
        h *= 0xc4ceb9fe1a85ec53L;
        h ^= h >>> 33;
        return h;
    }

    // ---- the open-loop generator ------------------------------------------------------

    static final class Generator extends RichParallelSourceFunction<Event> {
        /**
         * Below this wait the source spins; longer, it parks until the event is due. Short:
         * the source is a thread of its own beside the task threads that do the work, so
         * a source spinning between events (20 us apart at 100k/s on 2 subtasks) would take
         * a CPU from them (rill's and timely's generators run on the worker thread itself).
         * A park may wake up to the timer slack (50 us) late; that shows as latency.
         */
        static final long SPIN_NS = 10_000;
        final Args args;
        volatile boolean running = true;

        Generator(Args args) {
            this.args = args;
        }

        @Override
        public void run(SourceContext<Event> ctx) {
            int index = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            int p = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
            // The schedule starts 200 ms after every source subtask runs and every sink
            // writer exists (all tasks deployed), whoever sees that first sets it.
            SOURCES_RUNNING.incrementAndGet();
            while (START.get() == 0 && running) {
                if (SOURCES_RUNNING.get() >= p && SINKS_OPEN.get() >= p) {
                    START.compareAndSet(0, System.nanoTime() + 200_000_000L);
                } else {
                    LockSupport.parkNanos(100_000);
                }
            }
            long start = START.get();
            long events = args.events();
            long rate = args.rate;
            long warmupNs = args.warmupMs * 1_000_000L;
            long next = index;
            while (running && next < events) {
                long now = System.nanoTime();
                long off = offset(next, rate);
                if (start + off <= now) {
                    synchronized (ctx.getCheckpointLock()) {
                        while (next < events && start + (off = offset(next, rate)) <= now) {
                            Event e = new Event();
                            e.seq = next;
                            e.key = Long.remainderUnsigned(stableHash(next), args.keys);
                            e.dueNs = start + off;
                            e.measure = off >= warmupNs;
                            ctx.collect(e);
                            next += p;
                        }
                    }
                    continue;
                }
                long wait = start + off - now;
                if (wait < SPIN_NS) {
                    Thread.onSpinWait();
                } else {
                    LockSupport.parkNanos(wait);
                }
            }
        }

        /** ns after the start that `seq` is due, as rill computes it: seq * 1e9 / rate. */
        static long offset(long seq, long rate) {
            return Math.multiplyHigh(seq, 1_000_000_000L) == 0
                    ? seq * 1_000_000_000L / rate
                    : java.math.BigInteger.valueOf(seq).multiply(java.math.BigInteger.valueOf(1_000_000_000L))
                            .divide(java.math.BigInteger.valueOf(rate)).longValue();
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    // ---- keyBy -> per-key count in keyed state -----------------------------------------

    static final class Count extends KeyedProcessFunction<Long, Event, Event> implements CheckpointListener {
        transient ValueState<Long> count;

        @Override
        public void open(OpenContext ctx) {
            count = getRuntimeContext().getState(new ValueStateDescriptor<>("count", Types.LONG));
        }

        @Override
        public void processElement(Event e, Context ctx, Collector<Event> out) throws Exception {
            Long c = count.value();
            long n = (c == null ? 0 : c) + 1;
            count.update(n);
            e.count = n;
            out.collect(e);
        }

        @Override
        public void notifyCheckpointComplete(long checkpointId) {
            if (getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() == 0) {
                CHECKPOINTS_COMPLETED.incrementAndGet();
            }
        }
    }

    // ---- the simulated lookup ----------------------------------------------------------

    static final class Lookup extends RichAsyncFunction<Event, Event> {
        final long delayUs;
        transient ScheduledExecutorService timer;

        Lookup(long delayUs) {
            this.delayUs = delayUs;
        }

        @Override
        public void open(OpenContext ctx) {
            int index = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            timer = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "lookup-timer-" + index);
                t.setDaemon(true);
                return t;
            });
        }

        @Override
        public void asyncInvoke(Event e, ResultFuture<Event> result) {
            if (delayUs == 0) {
                // rill's simulated service answers at once when its delay is zero.
                result.complete(Collections.singletonList(e));
            } else {
                timer.schedule(() -> result.complete(Collections.singletonList(e)), delayUs, TimeUnit.MICROSECONDS);
            }
        }

        @Override
        public void timeout(Event e, ResultFuture<Event> result) {
            // rill's default on_timeout = "fail": the job fails naming the request.
            result.completeExceptionally(new TimeoutException("lookup of key " + e.key + " (seq " + e.seq + ") timed out"));
        }

        @Override
        public void close() {
            if (timer != null) {
                timer.shutdownNow();
            }
        }
    }

    // ---- the latency sink --------------------------------------------------------------

    static final class LatencySink implements Sink<Event> {
        @Override
        public SinkWriter<Event> createWriter(WriterInitContext ctx) {
            return new Writer(ctx.getTaskInfo().getIndexOfThisSubtask());
        }
    }

    static final class Writer implements SinkWriter<Event> {
        final int index;
        final SinkResult r = new SinkResult();

        Writer(int index) {
            this.index = index;
            r.latencies = new long[1 << 16];
            SINKS_OPEN.incrementAndGet();
        }

        @Override
        public void write(Event e, Context ctx) {
            long now = System.nanoTime();
            if (e.measure) {
                if (r.n == r.latencies.length) {
                    r.latencies = java.util.Arrays.copyOf(r.latencies, r.n * 2);
                }
                r.latencies[r.n++] = Math.max(1, now - e.dueNs);
            }
            r.sunk++;
            r.lastArrivalNs = now;
        }

        @Override
        public void flush(boolean endOfInput) {}

        @Override
        public void close() {
            RESULTS.put(index, r);
        }
    }

    // ---- main --------------------------------------------------------------------------

    public static void main(String[] argv) throws Exception {
        Args a = Args.parse(argv);
        Configuration conf = new Configuration();
        if (a.checkpointMs > 0) {
            conf.set(CheckpointingOptions.CHECKPOINT_STORAGE, "filesystem");
            conf.set(CheckpointingOptions.CHECKPOINTS_DIRECTORY, Paths.get(a.checkpointDir).toUri().toString());
        }
        StreamExecutionEnvironment env = StreamExecutionEnvironment.createLocalEnvironment(a.parallelism, conf);
        env.setBufferTimeout(0);
        if (a.checkpointMs > 0) {
            env.enableCheckpointing(a.checkpointMs, a.exactlyOnce ? CheckpointingMode.EXACTLY_ONCE : CheckpointingMode.AT_LEAST_ONCE);
            env.getCheckpointConfig().enableUnalignedCheckpoints(a.unaligned);
        }
        DataStream<Event> counted = env.addSource(new Generator(a), "generator")
                .returns(Event.class)
                .keyBy(e -> e.key, Types.LONG)
                .process(new Count())
                .name("count")
                .returns(Event.class);
        DataStream<Event> out = counted;
        if (a.pipeline.equals("keyed-async")) {
            Lookup lookup = new Lookup(a.delayUs);
            out = a.mode.equals("ordered")
                    ? AsyncDataStream.orderedWait(counted, lookup, a.timeoutMs, TimeUnit.MILLISECONDS, a.capacity)
                    : AsyncDataStream.unorderedWait(counted, lookup, a.timeoutMs, TimeUnit.MILLISECONDS, a.capacity);
            out = ((org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator<Event>) out).name("lookup").returns(Event.class);
        }
        out.sinkTo(new LatencySink()).name("latency");

        long wallStart = System.nanoTime();
        JobExecutionResult result = env.execute("rill-bench " + a.pipeline);
        long wallNs = System.nanoTime() - wallStart;

        Path dir = Paths.get(a.out);
        Files.createDirectories(dir);
        StringBuilder files = new StringBuilder();
        long sunk = 0, samples = 0, last = 0;
        for (int i = 0; i < a.parallelism; i++) {
            SinkResult r = RESULTS.get(i);
            if (r == null) {
                throw new IllegalStateException("sink subtask " + i + " reported nothing");
            }
            Path f = dir.resolve("latency-" + i + ".bin");
            writeLatencies(f, r.latencies, r.n);
            if (i > 0) {
                files.append(',');
            }
            files.append('"').append(f.toAbsolutePath().toString().replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
            sunk += r.sunk;
            samples += r.n;
            last = Math.max(last, r.lastArrivalNs);
        }
        long start = START.get();
        String version = org.apache.flink.runtime.util.EnvironmentInformation.getVersion();
        System.out.println("RILL-FLINK-RESULT {"
                + "\"flink_version\":\"" + version + "\""
                + ",\"java_version\":\"" + System.getProperty("java.version") + "\""
                + ",\"parallelism\":" + a.parallelism
                + ",\"sunk\":" + sunk
                + ",\"samples\":" + samples
                + ",\"start_ns\":" + start
                + ",\"last_arrival_ns\":" + last
                + ",\"end_lag_ms\":" + ((last - start) / 1e6 - a.durationMs)
                + ",\"checkpoints_completed\":" + CHECKPOINTS_COMPLETED.get()
                + ",\"job_runtime_ms\":" + result.getNetRuntime(TimeUnit.MILLISECONDS)
                + ",\"wall_ms\":" + wallNs / 1_000_000
                + ",\"latency_files\":[" + files + "]}");
        System.out.flush();
        // The MiniCluster leaves non-daemon threads behind on some versions.
        System.exit(0);
    }

    static void writeLatencies(Path f, long[] v, int n) throws IOException {
        try (DataOutputStream out = new DataOutputStream(new BufferedOutputStream(new FileOutputStream(f.toFile()), 1 << 16))) {
            ByteBuffer b = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < n; i++) {
                b.clear();
                b.putLong(v[i]);
                out.write(b.array());
            }
        }
    }
}
