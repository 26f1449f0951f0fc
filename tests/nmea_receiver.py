# A GPS receiver's NMEA output for gpsd, over TCP: RMC, GGA and ZDA at the
# top of every second of the host's clock, stamped with that second plus
# OFFSET (to the hundredth: -0.05 is NMEA 50 ms late); nothing is sent
# while SILENCE_FILE exists.  python3 nmea_receiver.py PORT OFFSET SILENCE_FILE
# (PORT 0: any; the port is printed as "listening PORT").
import os, socket, sys, time, datetime, threading
port, offset, silence = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
server = socket.socket()
server.bind(("127.0.0.1", port)); server.listen(4)
print("listening", server.getsockname()[1], flush=True)
clients = []
def accept():
    while True:
        c, _ = server.accept(); clients.append(c)
threading.Thread(target=accept, daemon=True).start()
def sentence(body):
    c = 0
    for ch in body: c ^= ord(ch)
    return "$%s*%02X\r\n" % (body, c)
while True:
    second = int(time.time()) + 1
    time.sleep(max(0.0, second - time.time()))
    if os.path.exists(silence):
        continue
    t = datetime.datetime.fromtimestamp(second + offset, datetime.timezone.utc)
    hms = t.strftime("%H%M%S") + ".%02d" % (t.microsecond // 10000)
    out = sentence("GPRMC,%s,A,4807.038,N,01131.000,E,000.0,000.0,%s,,,A" % (hms, t.strftime("%d%m%y")))
    out += sentence("GPGGA,%s,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,," % hms)
    out += sentence("GPZDA,%s,%s,%s,%s,00,00" % (hms, t.strftime("%d"), t.strftime("%m"), t.strftime("%Y")))
    for c in list(clients):
        try: c.sendall(out.encode())
        except OSError: clients.remove(c)
