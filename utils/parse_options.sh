#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by scripts *after* they set their defaults:
#   --foo-bar VALUE   sets foo_bar=VALUE (the variable must already exist)
#   --foo-bar=VALUE   the same
#   --flag            for a variable whose default is true/false, sets it to true
#   --help | -h       prints $help_message (if set) and, for each option, its value and the
#                     comment beside its default in the script (`nj=2   # parallel jobs`)
# Only the options a script declares in $_kocall_option_vars (variable names, space-separated)
# are accepted: `--path x` cannot set PATH, nor any other shell variable. An unknown option is
# an error. Positional arguments are left in "$@".

_kocall_is_option() {  # _kocall_is_option VAR: declared in $_kocall_option_vars and set?
  [[ " ${_kocall_option_vars:-} " == *" $1 "* ]] && [ -n "${!1+set}" ]
}

_kocall_option_comment() {  # _kocall_option_comment VAR: the comment on the line setting VAR's default in $0
  local line
  line=$(grep -m1 -E "^$1=" "$0" 2>/dev/null) || return 0
  [[ "$line" == *" # "* ]] && printf '%s' "${line#* # }"
  return 0
}

_kocall_print_help() {
  [ -n "${help_message:-}" ] && printf '%s\n' "$help_message" >&2
  echo "Options (current value; what it does):" >&2
  local v value
  for v in ${_kocall_option_vars:-}; do
    value=${!v}; [ -n "$value" ] || value="''"
    printf '  --%-16s %-10s %s\n' "${v//_/-}" "$value" "$(_kocall_option_comment "$v")" >&2
  done
}

while true; do
  [ -z "${1:-}" ] && break
  case "$1" in
    --help|-h) _kocall_print_help; exit 0 ;;
    --*=*)
      _name=${1%%=*}; _value=${1#*=}
      _var=${_name#--}; _var=${_var//-/_}
      if ! _kocall_is_option "$_var"; then echo "$0: invalid option $_name" >&2; _kocall_print_help; exit 1; fi
      printf -v "$_var" '%s' "$_value"; shift ;;
    --*)
      _var=${1#--}; _var=${_var//-/_}
      if ! _kocall_is_option "$_var"; then echo "$0: invalid option $1" >&2; _kocall_print_help; exit 1; fi
      _old=${!_var}
      if { [ "$_old" = true ] || [ "$_old" = false ]; } && { [ $# -lt 2 ] || [[ "$2" == --* ]]; }; then
        printf -v "$_var" '%s' true; shift
      else
        if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
        if { [ "$_old" = true ] || [ "$_old" = false ]; } && [ "$2" != true ] && [ "$2" != false ]; then
          echo "$0: option $1 takes true or false, not '$2'" >&2; exit 1
        fi
        printf -v "$_var" '%s' "$2"; shift 2
      fi ;;
    *) break ;;
  esac
done
unset _name _value _var _old
true
