"""fsync cost on this disk: 8 KiB writes, each made durable, three ways."""
import os, sys, time, statistics
d = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
buf = os.urandom(8192)
def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs)-1, max(0, int(round(p/100*len(xs)))-1))]
def report(name, xs):
    print(f"{name:48s} n={len(xs)} p50 {pct(xs,50)*1e3:7.3f} ms  p90 {pct(xs,90)*1e3:7.3f} ms  p99 {pct(xs,99)*1e3:7.3f} ms  mean {statistics.mean(xs)*1e3:7.3f} ms")
# 1. append + fsync (growing file: metadata too)
p = os.path.join(d, "probe-append"); 
fd = os.open(p, os.O_CREAT|os.O_TRUNC|os.O_WRONLY, 0o600); xs=[]
for i in range(n):
    t=time.perf_counter(); os.write(fd, buf); os.fsync(fd); xs.append(time.perf_counter()-t)
os.close(fd); report("append 8 KiB + fsync (file grows)", xs)
# 2. append + fdatasync (growing file)
fd = os.open(p, os.O_CREAT|os.O_TRUNC|os.O_WRONLY, 0o600); xs=[]
for i in range(n):
    t=time.perf_counter(); os.write(fd, buf); os.fdatasync(fd); xs.append(time.perf_counter()-t)
os.close(fd); report("append 8 KiB + fdatasync (file grows)", xs)
# 3. preallocated (written + synced once) then overwrite + fdatasync
fd = os.open(p, os.O_CREAT|os.O_TRUNC|os.O_WRONLY, 0o600)
os.write(fd, b"\0" * (8192 * n)); os.fsync(fd); os.lseek(fd, 0, 0); xs=[]
for i in range(n):
    t=time.perf_counter(); os.write(fd, buf); os.fdatasync(fd); xs.append(time.perf_counter()-t)
os.close(fd); report("preallocated, overwrite 8 KiB + fdatasync", xs)
# 4. preallocated, O_DSYNC writes
fd = os.open(p, os.O_WRONLY|os.O_DSYNC); xs=[]
for i in range(n):
    t=time.perf_counter(); os.write(fd, buf); xs.append(time.perf_counter()-t)
os.close(fd); report("preallocated, O_DSYNC 8 KiB write", xs)
# 5. preallocated, 512 B (one usage record frame) + fdatasync
fd = os.open(p, os.O_WRONLY); small = buf[:512]; xs=[]
for i in range(n):
    t=time.perf_counter(); os.write(fd, small); os.fdatasync(fd); xs.append(time.perf_counter()-t)
os.close(fd); report("preallocated, overwrite 512 B + fdatasync", xs)
os.unlink(p)
