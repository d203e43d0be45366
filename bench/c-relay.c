/*
 * The bench's "c-relay": the least a SOCKS4 CONNECT handler started once
 * per connection can do, in C, for comparison with socks4d under the same
 * launcher. It reads the request from fd 0, connects to DSTIP:DSTPORT,
 * answers granted on fd 1 and splices both ways through two pipes until
 * both sides have ended. No rules, no ident, no log, no confinement, no
 * timeouts: not a server, a measuring stick. bench/run.sh builds it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
	unsigned char req[600];
	size_t len = 0;
	/* VN CD DSTPORT DSTIP USERID NUL */
	while (len < 9 || memchr(req + 8, 0, len - 8) == NULL) {
		ssize_t n = read(0, req + len, sizeof req - len);
		if (n <= 0 || len + n >= sizeof req)
			return 1;
		len += n;
	}
	struct sockaddr_in dst = { .sin_family = AF_INET };
	memcpy(&dst.sin_port, req + 2, 2);
	memcpy(&dst.sin_addr, req + 4, 4);
	int d = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unsigned char reply[8] = { 0, 0x5b };
	if (d < 0 || connect(d, (struct sockaddr *)&dst, sizeof dst) != 0) {
		write(1, reply, 8);
		return 1;
	}
	reply[1] = 0x5a;
	if (write(1, reply, 8) != 8)
		return 1;
	int up[2], down[2];
	if (pipe2(up, O_CLOEXEC) || pipe2(down, O_CLOEXEC))
		return 1;
	fcntl(up[1], F_SETPIPE_SZ, 256 * 1024);
	fcntl(down[1], F_SETPIPE_SZ, 256 * 1024);
	int open_up = 1, open_down = 1;
	while (open_up || open_down) {
		struct pollfd p[2] = { { 0, open_up ? POLLIN : 0, 0 }, { d, open_down ? POLLIN : 0, 0 } };
		if (poll(p, 2, -1) < 0)
			return 1;
		if (open_up && p[0].revents) {
			ssize_t n = splice(0, NULL, up[1], NULL, 256 * 1024, SPLICE_F_MOVE);
			if (n <= 0) {
				shutdown(d, SHUT_WR);
				open_up = 0;
			}
			while (n > 0) {
				ssize_t m = splice(up[0], NULL, d, NULL, n, SPLICE_F_MOVE);
				if (m <= 0)
					return 1;
				n -= m;
			}
		}
		if (open_down && p[1].revents) {
			ssize_t n = splice(d, NULL, down[1], NULL, 256 * 1024, SPLICE_F_MOVE);
			if (n <= 0) {
				shutdown(1, SHUT_WR);
				open_down = 0;
			}
			while (n > 0) {
				ssize_t m = splice(down[0], NULL, 1, NULL, n, SPLICE_F_MOVE);
				if (m <= 0)
					return 1;
				n -= m;
			}
		}
	}
	return 0;
}
