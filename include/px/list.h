/* px/list.h -- an intrusive doubly linked list (the Linux kernel's list.h,
 * nginx's ngx_queue_t): a struct px_list_node inside the object, a struct
 * px_list where the list is kept, px_container_of from node to object. No
 * allocation, O(1) insert and remove.
 *
 * Unlike the kernel's circular list, the ends are NULL and no node points
 * at the head, so that
 *  - zeroed memory is an empty list and an unlinked node (calloc'd objects
 *    and memset tables need no init call), and
 *  - a head may move (the upstream pool table is realloc'd as it grows);
 * in exchange px_list_remove takes the list as well as the node.
 * A node is on one list at a time per px_list_node member; the caller knows
 * which (a flag or a state), as before. A leaf: it includes no px/ header. */
#ifndef PX_LIST_H
#define PX_LIST_H

#include <stddef.h>

struct px_list_node {
    struct px_list_node *next, *prev;
};

struct px_list {
    struct px_list_node *first, *last;
};

/* The object of type `type` whose member `member` is at ptr. */
#define px_container_of(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))
/* The same, NULL for NULL (px_list_first of an empty list). */
#define px_list_entry(node, type, member)                                                               \
    ((node) ? px_container_of((node), type, member) : (type *)NULL)

static inline void px_list_init(struct px_list *l)
{
    l->first = l->last = NULL;
}

static inline int px_list_empty(const struct px_list *l)
{
    return l->first == NULL;
}

static inline struct px_list_node *px_list_first(const struct px_list *l)
{
    return l->first;
}

static inline struct px_list_node *px_list_last(const struct px_list *l)
{
    return l->last;
}

static inline void px_list_insert_head(struct px_list *l, struct px_list_node *n)
{
    n->prev = NULL;
    n->next = l->first;
    if (l->first)
        l->first->prev = n;
    else
        l->last = n;
    l->first = n;
}

static inline void px_list_insert_tail(struct px_list *l, struct px_list_node *n)
{
    n->next = NULL;
    n->prev = l->last;
    if (l->last)
        l->last->next = n;
    else
        l->first = n;
    l->last = n;
}

/* Take n (which is on l) off l; n is left unlinked (both NULL). */
static inline void px_list_remove(struct px_list *l, struct px_list_node *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        l->first = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->last = n->prev;
    n->next = n->prev = NULL;
}

/* Every node of l, first to last, in n; the body must not remove n. */
#define px_list_foreach(l, n) for ((n) = (l)->first; (n) != NULL; (n) = (n)->next)

/* Every node of l, first to last, in n; the next one is taken before the
 * body runs (in tmp), so the body may remove n (or anything but tmp). */
#define px_list_foreach_safe(l, n, tmp)                                                                 \
    for ((n) = (l)->first, (tmp) = (n) ? (n)->next : NULL; (n) != NULL;                                \
         (n) = (tmp), (tmp) = (n) ? (n)->next : NULL)

#endif
