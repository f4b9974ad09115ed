/*  zinfer.h - subcommands of the `zinfer` operator command.

    Each subcommand is `int zi_cmd_NAME (int argc, char **argv)` with
    argv[0] == "NAME"; it returns the process exit code (0 ok, 1 failure,
    2 bad usage).
*/
#ifndef ZINFER_CMD_H_INCLUDED
#define ZINFER_CMD_H_INCLUDED

int zi_cmd_conformance (int argc, char **argv);
int zi_cmd_run (int argc, char **argv);
int zi_cmd_info (int argc, char **argv);
int zi_cmd_eval (int argc, char **argv);
int zi_cmd_bench (int argc, char **argv);
int zi_cmd_plan (int argc, char **argv);

#endif
