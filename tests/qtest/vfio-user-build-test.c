/*
 * What the binary contains: our vfio-user pieces, and none of QEMU 7.2's
 * experimental multi-process code (one remote machine: ours).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "libqtest.h"
#include "qapi/qmp/qdict.h"
#include "qapi/qmp/qlist.h"

static bool has_type(QTestState *qts, const char *name)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'qom-list-types' }");
    QList *list = qdict_get_qlist(rsp, "return");
    QListEntry *e;
    bool found = false;

    g_assert(list);
    QLIST_FOREACH_ENTRY(list, e) {
        QDict *t = qobject_to(QDict, qlist_entry_obj(e));
        if (g_str_equal(qdict_get_str(t, "name"), name)) {
            found = true;
        }
    }
    qobject_unref(rsp);
    return found;
}

static bool has_machine(QTestState *qts, const char *name)
{
    QDict *rsp = qtest_qmp(qts, "{ 'execute': 'query-machines' }");
    QList *list = qdict_get_qlist(rsp, "return");
    QListEntry *e;
    bool found = false;

    g_assert(list);
    QLIST_FOREACH_ENTRY(list, e) {
        QDict *m = qobject_to(QDict, qlist_entry_obj(e));
        if (g_str_equal(qdict_get_str(m, "name"), name)) {
            found = true;
        }
    }
    qobject_unref(rsp);
    return found;
}

static void test_no_experimental_multiprocess(void)
{
    QTestState *qts = qtest_init("-M none");

    g_assert(!has_machine(qts, "x-remote"));
    g_assert(!has_type(qts, "x-remote-machine"));
    g_assert(!has_type(qts, "x-pci-proxy-dev"));
    g_assert(!has_type(qts, "x-remote-object"));
    g_assert(!has_type(qts, "x-vfio-user-server"));
    /* the check itself can fail: a type that is there is found */
    g_assert(has_type(qts, "edu"));
    g_assert(has_machine(qts, "none"));
    qtest_quit(qts);
}

/*
 * Debian's firmware is found without -L: SeaBIOS for the machine, iPXE for
 * a NIC's option ROM, and qemu-system-data's folder is searched.
 */
static void test_firmware_without_L(void)
{
    QTestState *qts = qtest_init("-M q35 -device e1000e,netdev=n0 "
                                 "-netdev user,id=n0");
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_autofree char *cmd = NULL;
    int status;

    g_assert_cmpint(qtest_readb(qts, 0xffff0), ==, 0xea);  /* reset jmp */
    qtest_quit(qts);

    cmd = g_strdup_printf("%s -L help", g_getenv("QTEST_QEMU_BINARY"));
    g_assert(g_spawn_command_line_sync(cmd, &out, &err, &status, NULL));
    g_test_message("-L help: %s", out);
    g_assert(strstr(out, "/usr/share/qemu\n"));
    g_assert(strstr(out, "/usr/share/seabios\n"));
    g_assert(strstr(out, "/usr/lib/ipxe/qemu\n"));
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    qtest_add_func("/vfio-user/build/firmware-without-L",
                   test_firmware_without_L);
    qtest_add_func("/vfio-user/build/no-experimental-multiprocess",
                   test_no_experimental_multiprocess);
    return g_test_run();
}
