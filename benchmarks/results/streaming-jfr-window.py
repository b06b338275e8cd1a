import json,subprocess,sys,collections
# top frames and selected "where" buckets of jdk.ExecutionSample in a JFR file
f=sys.argv[1]
out=subprocess.run(['jfr','print','--json','--events','jdk.ExecutionSample',f],capture_output=True,text=True).stdout
ev=json.loads(out)['recording']['events']
top=collections.Counter(); buckets=collections.Counter(); threads=collections.Counter()
rules=[('Jackson JSON generator','com/fasterxml/jackson'),('TextEventTemplate','TextEventTemplate'),
       ('socket write (writev/flush)','NioSocketChannel.doWrite'),('HTTP encoder','HttpObjectEncoder'),
       ('SseStream (decode, holdback)','SseStream'),('model forward (DJL/PyTorch)','ai.djl'),('Sampler','Sampler'),
       ('event-loop select','NioEventLoop.select')]
for e in ev:
    if e['values']['startTime'][11:19] < '23:54:20': continue
    fr=e['values']['stackTrace']['frames']
    names=[x['method']['type']['name']+'.'+x['method']['name'] for x in fr]
    th=e['values'].get('sampledThread',{}).get('javaName','?')
    threads[th[:28]]+=1
    if names: top[names[0]]+=1
    s=' '.join(names)
    for label,key in rules:
        if key in s: buckets[label]+=1
n=sum(threads.values()); print('samples',n)
print('threads:',threads.most_common(8))
for label,_ in rules: print(f'  {label}: {buckets[label]} ({100*buckets[label]/max(n,1):.1f} %)')
print('top frames:')
for k,v in top.most_common(15): print(f'  {v:6d} {100*v/n:5.1f} % {k}')
