# Sourced by the benchmarks that run nginx as the peer: one worker, no access log, its pid and
# error log in the run's work directory.
#
#   nginx_conf FILE WORK HTTP-BLOCK-BODY    # writes FILE
nginx_conf() {
  cat > "$1" <<NGINX
worker_processes 1;
pid $2/nginx.pid;
error_log $2/nginx.err;
events { worker_connections 8192; }
http { access_log off; $3 }
NGINX
}
